//! SCRAM-SHA-256 login ([RFC 5802](https://www.rfc-editor.org/rfc/rfc5802),
//! [RFC 7677](https://www.rfc-editor.org/rfc/rfc7677)) and the per-session MAC keys.
//!
//! The password never crosses the wire at login: the client proves knowledge of
//! `ClientKey`, the server proves knowledge of `ServerKey`, and both then derive two session
//! keys from `ClientKey` and the login's `AuthMessage`:
//!
//! ```text
//! c2s = HMAC(ClientKey, "txsock/1 session c2s" || 0x00 || AuthMessage)
//! s2c = HMAC(ClientKey, "txsock/1 session s2c" || 0x00 || AuthMessage)
//! ```
//!
//! The server never stores `ClientKey`; it recovers it from the client's proof
//! (`ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage)`) and checks
//! `SHA-256(ClientKey) == StoredKey`.

use crate::crypto::{ct_eq, sha256, HmacSha256, Key, Keyed, MacKey, MacState, Tag, TAG_LEN};
use crate::encoding::base64_encode;
use crate::names::Username;
use zeroize::Zeroize;

/// The PBKDF2 iteration count used when nothing else is configured: the OWASP 2023
/// recommendation for PBKDF2-HMAC-SHA256.
pub const DEFAULT_ITERATIONS: u32 = 600_000;

/// The highest PBKDF2 iteration count a client runs by default
/// ([`ClientConfig::max_iterations`](crate::session::ClientConfig::max_iterations)), and so
/// the highest a server accepts in a registration: an account above it is one that no
/// conforming client could ever log in to.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Salt length generated for new users, in bytes.
pub const SALT_LEN: usize = 16;
/// Shortest salt a server accepts in a registration, in bytes.
pub const MIN_SALT: usize = 8;
/// Longest salt accepted from the wire, in bytes.
pub const MAX_SALT: usize = 32;
/// Longest client nonce accepted in a SCRAM exchange (the server adds 24 characters).
pub const MAX_SCRAM_NONCE: usize = 32;

/// `SaltedPassword := Hi(Normalize(password), salt, i)` ([RFC 5802 §3]), i.e.
/// PBKDF2-HMAC-SHA256 with a 32-byte output. txsock does not apply SASLprep: the password's
/// UTF-8 bytes are used as typed.
///
/// [RFC 5802 §3]: https://www.rfc-editor.org/rfc/rfc5802#section-3
pub fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    let mut out = [0u8; TAG_LEN];
    pbkdf2::pbkdf2::<HmacSha256>(password, salt, iterations, &mut out)
        .expect("HMAC takes any key length");
    let key = Key::from_bytes(out);
    out.zeroize();
    key
}

/// What the server stores for a user: never the password, never `ClientKey`.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    /// The user's random salt.
    pub salt: heapless::Vec<u8, MAX_SALT>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// `SHA-256(ClientKey)`.
    pub stored_key: [u8; TAG_LEN],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; TAG_LEN],
}

impl Verifier {
    /// Derives the verifier from a salted password (the client does this at registration;
    /// the admin command does it when provisioning a user).
    pub fn from_salted_password(salted: &Key, salt: &[u8], iterations: u32) -> Verifier {
        let client_key = client_key(salted);
        let mut s = heapless::Vec::new();
        // Salts come from SALT_LEN-sized generators or MAX_SALT-checked input.
        let _ = s.extend_from_slice(&salt[..salt.len().min(MAX_SALT)]);
        Verifier {
            salt: s,
            iterations,
            stored_key: sha256(client_key.as_bytes()),
            server_key: *salted.sign(&[b"Server Key"]).as_bytes(),
        }
    }

    /// Runs PBKDF2 on `password` and derives the verifier.
    pub fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> Verifier {
        Self::from_salted_password(
            &salted_password(password, salt, iterations),
            salt,
            iterations,
        )
    }
}

/// `ClientKey := HMAC(SaltedPassword, "Client Key")`.
pub fn client_key(salted: &Key) -> Key {
    Key::from(salted.sign(&[b"Client Key"]))
}

/// The three messages whose concatenation is SCRAM's `AuthMessage`
/// ([RFC 5802 §3](https://www.rfc-editor.org/rfc/rfc5802#section-3)):
///
/// ```text
/// n=<user>,r=<client nonce>,r=<full nonce>,s=<base64 salt>,i=<iterations>,c=biws,r=<full nonce>
/// ```
///
/// It is fed to HMAC piecewise instead of being stored, which saves a few hundred bytes per
/// session on a microcontroller.
#[derive(Debug, Clone, Copy)]
pub struct AuthMessage<'a> {
    /// The normalised username.
    pub user: &'a str,
    /// The client's nonce.
    pub client_nonce: &'a str,
    /// The client's nonce followed by the server's extension.
    pub full_nonce: &'a str,
    /// The salt in bytes (sent base64-encoded).
    pub salt: &'a [u8],
    /// PBKDF2 iteration count.
    pub iterations: u32,
}

impl AuthMessage<'_> {
    /// Feeds the `AuthMessage` bytes into `mac`.
    pub fn feed(&self, mac: &mut MacState) {
        let salt = base64_encode::<{ 4 * MAX_SALT.div_ceil(3) }>(self.salt);
        let mut digits = [0u8; 10];
        mac.update(b"n=");
        mac.update(self.user.as_bytes());
        mac.update(b",r=");
        mac.update(self.client_nonce.as_bytes());
        mac.update(b",r=");
        mac.update(self.full_nonce.as_bytes());
        mac.update(b",s=");
        mac.update(salt.as_bytes());
        mac.update(b",i=");
        mac.update(decimal(self.iterations, &mut digits));
        mac.update(b",c=biws,r=");
        mac.update(self.full_nonce.as_bytes());
    }

    /// `HMAC(key, label || AuthMessage)`.
    fn sign(&self, key: &Key, label: &[u8]) -> Tag {
        let mut m = key.mac();
        m.update(label);
        self.feed(&mut m);
        m.finish()
    }
}

/// Writes `n` in decimal into `buf`, returning the digits.
pub(crate) fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    // A u32 has at most 10 digits; written right to left.
    let mut len = 0;
    for digit in buf.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    buf.get(buf.len() - len..).unwrap_or_default()
}

/// The two per-session MAC keys derived at login.
#[derive(Debug, Clone)]
pub struct SessionKeys {
    /// Key for client-to-server MACs (transfers).
    pub client_to_server: Key,
    /// Key for server-to-client MACs (receipts, balances, history).
    pub server_to_client: Key,
}

impl SessionKeys {
    /// Derives both keys from `ClientKey` and the login's `AuthMessage`.
    pub fn derive(client_key: &Key, auth: &AuthMessage<'_>) -> SessionKeys {
        SessionKeys {
            client_to_server: Key::from(auth.sign(client_key, b"txsock/1 session c2s\0")),
            server_to_client: Key::from(auth.sign(client_key, b"txsock/1 session s2c\0")),
        }
    }
}

/// The session keys in the form sessions keep them: HMAC states precomputed.
#[derive(Debug, Clone)]
pub struct SessionMacs {
    /// Key for client-to-server MACs (transfers).
    pub client_to_server: MacKey,
    /// Key for server-to-client MACs (receipts, balances, history).
    pub server_to_client: MacKey,
}

impl SessionKeys {
    /// Precomputes both keys' HMAC states.
    pub fn precompute(&self) -> SessionMacs {
        SessionMacs {
            client_to_server: MacKey::new(&self.client_to_server),
            server_to_client: MacKey::new(&self.server_to_client),
        }
    }
}

/// Client side: computes `ClientProof` and the expected `ServerSignature`.
pub struct ClientProof {
    /// `ClientKey XOR HMAC(StoredKey, AuthMessage)`.
    pub proof: [u8; TAG_LEN],
    /// `HMAC(ServerKey, AuthMessage)`, to compare with the server's answer.
    pub expected_server_signature: Tag,
    /// Keys for the session, valid once the server signature has been checked.
    pub keys: SessionKeys,
}

impl ClientProof {
    /// Computes the client's proof for `auth` from the salted password.
    pub fn compute(salted: &Key, auth: &AuthMessage<'_>) -> ClientProof {
        let client_key = client_key(salted);
        let stored_key = Key::from_bytes(sha256(client_key.as_bytes()));
        let signature = auth.sign(&stored_key, b"");
        let mut proof = [0u8; TAG_LEN];
        for (p, (k, s)) in proof
            .iter_mut()
            .zip(client_key.as_bytes().iter().zip(signature.as_bytes()))
        {
            *p = k ^ s;
        }
        let server_key = Key::from(salted.sign(&[b"Server Key"]));
        ClientProof {
            proof,
            expected_server_signature: auth.sign(&server_key, b""),
            keys: SessionKeys::derive(&client_key, auth),
        }
    }
}

/// Error returned by [`verify_client_proof`].
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyError;

impl core::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("authentication proof does not verify")
    }
}

impl core::error::Error for VerifyError {}

/// Server side: checks `proof` against the stored verifier. On success returns the
/// `ServerSignature` to send back and the session keys.
pub fn verify_client_proof(
    stored_key: &[u8; TAG_LEN],
    server_key: &[u8; TAG_LEN],
    auth: &AuthMessage<'_>,
    proof: &[u8; TAG_LEN],
) -> Result<(Tag, SessionKeys), VerifyError> {
    let signature = auth.sign(&Key::from_bytes(*stored_key), b"");
    let mut bytes = [0; TAG_LEN];
    for (c, (p, s)) in bytes.iter_mut().zip(proof.iter().zip(signature.as_bytes())) {
        *c = p ^ s;
    }
    let client_key = Key::from_bytes(bytes);
    bytes.zeroize();
    if !ct_eq(&sha256(client_key.as_bytes()), stored_key) {
        return Err(VerifyError);
    }
    let server_signature = auth.sign(&Key::from_bytes(*server_key), b"");
    Ok((server_signature, SessionKeys::derive(&client_key, auth)))
}

/// A salt for a user that does not exist, stable for that name under `secret`, so that
/// probing a username learns nothing from the challenge.
pub fn fake_salt(secret: &Key, user: &Username) -> [u8; SALT_LEN] {
    let tag = secret.sign(&[b"txsock/1 fake salt\0", user.as_str().as_bytes()]);
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&tag.as_bytes()[..SALT_LEN]);
    salt
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::base64_decode;

    /// The SCRAM-SHA-256 exchange of
    /// [RFC 7677 §3](https://www.rfc-editor.org/rfc/rfc7677#section-3), checked on both sides.
    #[test]
    fn rfc7677_exchange() {
        let v = &crate::selftest::RFC7677;
        let mut salt = [0u8; 32];
        let salt = base64_decode(v.salt_b64, &mut salt).unwrap();
        let auth = AuthMessage {
            user: v.user,
            client_nonce: v.client_nonce,
            full_nonce: v.full_nonce,
            salt,
            iterations: v.iterations,
        };
        let salted = salted_password(v.password.as_bytes(), salt, v.iterations);
        let client = ClientProof::compute(&salted, &auth);
        assert_eq!(base64_encode::<44>(&client.proof).as_str(), v.proof_b64);
        assert_eq!(
            base64_encode::<44>(client.expected_server_signature.as_bytes()),
            v.server_signature_b64
        );

        let verifier = Verifier::from_salted_password(&salted, salt, v.iterations);
        let (sig, keys) = verify_client_proof(
            &verifier.stored_key,
            &verifier.server_key,
            &auth,
            &client.proof,
        )
        .unwrap();
        assert_eq!(sig.as_bytes(), client.expected_server_signature.as_bytes());
        assert!(keys.client_to_server.ct_eq(&client.keys.client_to_server));
        assert!(keys.server_to_client.ct_eq(&client.keys.server_to_client));
        assert!(!keys.client_to_server.ct_eq(&keys.server_to_client));

        let mut bad = client.proof;
        bad[0] ^= 1;
        assert!(
            verify_client_proof(&verifier.stored_key, &verifier.server_key, &auth, &bad).is_err()
        );
    }

    /// PBKDF2-HMAC-SHA256 with c = 1 from
    /// [RFC 7914 §11](https://www.rfc-editor.org/rfc/rfc7914#section-11).
    #[test]
    fn rfc7914_pbkdf2_c1() {
        let mut out = [0u8; 64];
        pbkdf2::pbkdf2::<HmacSha256>(b"passwd", b"salt", 1, &mut out).unwrap();
        assert_eq!(
            crate::encoding::hex_encode::<128>(&out).as_str(),
            crate::selftest::RFC7914_C1
        );
    }

    #[test]
    fn decimal_formats() {
        let mut b = [0u8; 10];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(4096, &mut b), b"4096");
        assert_eq!(decimal(u32::MAX, &mut b), b"4294967295");
    }

    /// An unknown user's fake salt is what keeps usernames from being probed: the same name
    /// always gets the same salt (as a real user's would), two names get different salts, and
    /// another server secret gives other salts (nobody can compute them without it).
    #[test]
    fn fake_salts_are_stable_distinct_and_secret() {
        let secret = Key::from_bytes([1; 32]);
        let name = |s: &str| Username::parse(s).unwrap();
        let mallory = fake_salt(&secret, &name("mallory"));
        assert_eq!(
            mallory,
            fake_salt(&Key::from_bytes([1; 32]), &name("mallory"))
        );
        assert_ne!(mallory, fake_salt(&secret, &name("mallorz")));
        assert_ne!(
            mallory,
            fake_salt(&Key::from_bytes([2; 32]), &name("mallory"))
        );
        assert_ne!(mallory, [0; SALT_LEN]);
        let distinct: std::collections::HashSet<_> = (0..64)
            .map(|i| fake_salt(&secret, &name(&std::format!("user{i}"))))
            .collect();
        assert_eq!(distinct.len(), 64);
    }
}
