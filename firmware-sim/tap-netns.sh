#!/usr/bin/env bash
# Network namespaces for running the txsock device on a TAP interface, with a real client.
#
#   tap-netns.sh up [ID]     create them (ID: any short tag, default 0)
#   tap-netns.sh down [ID]   delete them and everything in them
#   tap-netns.sh names [ID]  print the names (device namespace, client namespace, TAP interface)
#
# Two namespaces, joined at layer 2, with documentation addresses only (192.0.2.0/24, RFC 5737)
# and no default route, so nothing can leave them:
#
#   txsock-dev-ID: TAP interface txsIDtap (the device's "Ethernet port": the process that runs
#                  `txsock-firmware-sim --tap txsIDtap` owns the other end), bridged to veth
#                  txsIDd. No IP address: the device's IP stack is smoltcp, 192.0.2.2/24.
#   txsock-cli-ID: veth txsIDc with 192.0.2.1/24, for the client.
#
# Then, as root:
#   ip netns exec txsock-dev-ID txsock-firmware-sim --tap txsIDtap --address 192.0.2.2/24 &
#   ip netns exec txsock-cli-ID txsock client --server 192.0.2.2:11002 --user alice register
#   tap-netns.sh down ID
#
# Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN), iproute2 and /dev/net/tun.
set -euo pipefail

action=${1:-}
id=${2:-0}
if [[ ! $id =~ ^[0-9a-z]{1,8}$ ]]; then
    echo "tap-netns.sh: ID must be 1 to 8 characters of 0-9 a-z" >&2
    exit 2
fi
dev_ns="txsock-dev-$id"
cli_ns="txsock-cli-$id"
tap="txs${id}tap"
bridge="txs${id}br"
veth_dev="txs${id}d"
veth_cli="txs${id}c"
client_address="192.0.2.1/24"

down() {
    # Deleting a namespace deletes the interfaces in it (the veth pair with it).
    ip netns del "$dev_ns" 2>/dev/null || true
    ip netns del "$cli_ns" 2>/dev/null || true
}

up() {
    down
    trap 'down' ERR
    ip netns add "$dev_ns"
    ip netns add "$cli_ns"
    for ns in "$dev_ns" "$cli_ns"; do
        ip -n "$ns" link set lo up
        # No IPv6 chatter (router solicitations, DAD) on the device's link.
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    done
    ip -n "$dev_ns" tuntap add dev "$tap" mode tap
    ip -n "$dev_ns" link add name "$bridge" type bridge forward_delay 0
    ip link add "$veth_dev" netns "$dev_ns" type veth peer name "$veth_cli" netns "$cli_ns"
    ip -n "$dev_ns" link set "$tap" master "$bridge"
    ip -n "$dev_ns" link set "$veth_dev" master "$bridge"
    for link in "$bridge" "$tap" "$veth_dev"; do
        ip -n "$dev_ns" link set "$link" up
    done
    ip -n "$cli_ns" addr add "$client_address" dev "$veth_cli"
    ip -n "$cli_ns" link set "$veth_cli" up
    trap - ERR
}

case "$action" in
    up) up ;;
    down) down ;;
    names) echo "$dev_ns $cli_ns $tap" ;;
    *)
        echo "usage: tap-netns.sh up|down|names [ID]" >&2
        exit 2
        ;;
esac
