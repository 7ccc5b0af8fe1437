//! Volatile copies between guest memory and ordinary buffers.
//!
//! Guest memory changes under us, so every access to it is a volatile one (the compiler may
//! neither elide, merge, nor invent accesses). Bulk copies use aligned 8-byte volatile
//! accesses for the body and single bytes at the edges: about as fast as `memcpy` for page-
//! sized copies, without ever reading guest memory twice or through a reference.

// Unsafe: volatile copies to and from guest memory.
#![allow(unsafe_code)]

use core::ptr;

const WORD: usize = core::mem::size_of::<u64>();

/// Copies `dst.len()` bytes from guest memory at `src` into `dst`.
///
/// # Safety
/// `src .. src + dst.len()` must be mapped and readable for the whole call.
pub(crate) unsafe fn copy_from(src: *const u8, dst: &mut [u8]) {
    let len = dst.len();
    let out = dst.as_mut_ptr();
    let mut i = 0;
    // Leading bytes until the guest side is 8-aligned.
    while i < len && (src as usize + i) % WORD != 0 {
        // SAFETY: i < len: inside both ranges.
        unsafe { out.add(i).write(src.add(i).read_volatile()) };
        i += 1;
    }
    while i + WORD <= len {
        // SAFETY: src + i is 8-aligned and the word lies inside the source range; the
        // destination is a plain buffer, written unaligned.
        unsafe {
            let w = src.add(i).cast::<u64>().read_volatile();
            out.add(i).cast::<u64>().write_unaligned(w);
        }
        i += WORD;
    }
    while i < len {
        // SAFETY: i < len.
        unsafe { out.add(i).write(src.add(i).read_volatile()) };
        i += 1;
    }
}

/// Copies `src` into guest memory at `dst`.
///
/// # Safety
/// `dst .. dst + src.len()` must be mapped and writable for the whole call.
pub(crate) unsafe fn copy_to(dst: *mut u8, src: &[u8]) {
    let len = src.len();
    let inp = src.as_ptr();
    let mut i = 0;
    while i < len && (dst as usize + i) % WORD != 0 {
        // SAFETY: i < len: inside both ranges.
        unsafe { dst.add(i).write_volatile(inp.add(i).read()) };
        i += 1;
    }
    while i + WORD <= len {
        // SAFETY: dst + i is 8-aligned and the word lies inside the destination range.
        unsafe {
            let w = inp.add(i).cast::<u64>().read_unaligned();
            dst.add(i).cast::<u64>().write_volatile(w);
        }
        i += WORD;
    }
    while i < len {
        // SAFETY: i < len.
        unsafe { dst.add(i).write_volatile(inp.add(i).read()) };
        i += 1;
    }
}

/// Writes `len` bytes of `byte` to guest memory at `dst`.
///
/// # Safety
/// `dst .. dst + len` must be mapped and writable for the whole call.
pub(crate) unsafe fn fill(dst: *mut u8, len: usize, byte: u8) {
    let word = u64::from_ne_bytes([byte; WORD]);
    let mut i = 0;
    while i < len && (dst as usize + i) % WORD != 0 {
        // SAFETY: i < len.
        unsafe { dst.add(i).write_volatile(byte) };
        i += 1;
    }
    while i + WORD <= len {
        // SAFETY: aligned word inside the range.
        unsafe { dst.add(i).cast::<u64>().write_volatile(word) };
        i += WORD;
    }
    while i < len {
        // SAFETY: i < len.
        unsafe { dst.add(i).write_volatile(byte) };
        i += 1;
    }
}

/// Reads a `T` at `src`: one volatile access when `src` is aligned for `T`, a volatile byte
/// copy otherwise.
///
/// # Safety
/// `src .. src + size_of::<T>()` must be mapped and readable, and every bit pattern must be a
/// valid `T`.
pub(crate) unsafe fn read<T: Copy>(src: *const u8) -> T {
    if (src as usize) % core::mem::align_of::<T>() == 0 {
        // SAFETY: aligned and readable; any bits are a valid T (caller).
        unsafe { src.cast::<T>().read_volatile() }
    } else {
        let mut v = core::mem::MaybeUninit::<T>::uninit();
        // SAFETY: the destination is a T-sized local; source readable (caller).
        unsafe {
            copy_from(
                src,
                core::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), core::mem::size_of::<T>()),
            );
            v.assume_init()
        }
    }
}

/// Writes `value` at `dst`, like [`read`] in the other direction.
///
/// # Safety
/// `dst .. dst + size_of::<T>()` must be mapped and writable.
pub(crate) unsafe fn write<T: Copy>(dst: *mut u8, value: T) {
    if (dst as usize) % core::mem::align_of::<T>() == 0 {
        // SAFETY: aligned and writable (caller).
        unsafe { dst.cast::<T>().write_volatile(value) }
    } else {
        // SAFETY: `value` is a live local of size_of::<T>() bytes; destination writable.
        unsafe {
            copy_to(
                dst,
                core::slice::from_raw_parts(
                    ptr::from_ref(&value).cast(),
                    core::mem::size_of::<T>(),
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_alignment_and_length() {
        let mut backing = [0u64; 64];
        let base = backing.as_mut_ptr().cast::<u8>();
        for start in 0..9 {
            for len in 0..40 {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + start) as u8).collect();
                // SAFETY: inside `backing` (512 bytes).
                unsafe { copy_to(base.add(start), &data) };
                let mut back = vec![0u8; len];
                // SAFETY: as above.
                unsafe { copy_from(base.add(start), &mut back) };
                assert_eq!(back, data, "start {start} len {len}");
                // SAFETY: as above.
                unsafe { fill(base.add(start), len, 0xa5) };
                // SAFETY: as above.
                unsafe { copy_from(base.add(start), &mut back) };
                assert!(back.iter().all(|&b| b == 0xa5));
            }
        }
        // SAFETY: inside `backing`.
        unsafe {
            write::<u64>(base.add(3), 0x0102_0304_0506_0708);
            assert_eq!(read::<u64>(base.add(3)), 0x0102_0304_0506_0708);
            write::<u32>(base.add(8), 0xfeed_f00d);
            assert_eq!(read::<u32>(base.add(8)), 0xfeed_f00d);
        }
    }
}
