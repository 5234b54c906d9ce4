/*
 * A stand-in for Windows' bcryptprimitives.dll, for running Rust programs under a Wine that
 * lacks it (Debian 12's Wine 8.0). Rust's std asks ProcessPrng for random bytes on Windows
 * since Rust 1.78; this one answers from RtlGenRandom (advapi32's SystemFunction036), which
 * every Wine has. `cargo xtask test` builds it with mingw-w64 and puts it beside txsock.exe
 * in the Windows smoke test's scratch directory only: it is never shipped, and real Windows
 * (8 and later) has the genuine DLL.
 */
#include <windows.h>

/* RtlGenRandom: fills `buffer` with `length` random bytes; TRUE on success. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* https://learn.microsoft.com/windows/win32/seccng/processprng */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
