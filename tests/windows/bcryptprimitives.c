/*
 * Test-only stand-in for Windows' bcryptprimitives.dll, for Wine 8 (Debian 12), which does not
 * ship it. Rust's standard library (1.78 and later) draws its randomness from
 * bcryptprimitives!ProcessPrng, so without this DLL no Rust program for Windows starts under
 * Wine 8 ("Library bcryptprimitives.dll ... not found", status c0000135). Every Windows the
 * agent supports (10 and later) has the real one; this file is never shipped, only copied into
 * the test's Wine prefix by tests/windows/wine_suite.py.
 *
 * ProcessPrng fills the buffer from the system RNG and always returns TRUE (its documented
 * contract); here it is RtlGenRandom (advapi32!SystemFunction036), which Wine implements with
 * the host's random device.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            ExitProcess(0xC0000001); /* never return a buffer that is not random */
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
