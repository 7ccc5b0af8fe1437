//! Reading the values the C compilers computed out of their assembly output (`-S`), so no
//! machine of the target architecture is needed.

use super::*;

/// Reads the bytes of the objects labelled `xsbf_N` out of clang/gcc assembly (little-endian
/// data directives; `.word` is 2 bytes on x86 and 4 on arm).
pub(super) fn parse_asm_objects(asm: &str, arch: Arch, n: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut objects: Vec<Option<Vec<u8>>> = vec![None; n];
    let mut current: Option<(usize, Vec<u8>)> = None;
    for line in asm.lines() {
        let t = line.trim();
        let first = t.split_whitespace().next().unwrap_or("");
        if let Some(label) = first.strip_suffix(':') {
            if let Some((i, bytes)) = current.take() {
                objects[i] = Some(bytes);
            }
            current = label
                .strip_prefix("xsbf_")
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|i| *i < n)
                .map(|i| (i, Vec::new()));
            continue;
        }
        let Some((i, bytes)) = &mut current else {
            continue;
        };
        let mut words = t.splitn(2, char::is_whitespace);
        let dir = words.next().unwrap_or("");
        let arg = words
            .next()
            .unwrap_or("")
            .split(['#', '@'])
            .next()
            .unwrap_or("")
            .trim();
        let arg = arg.split("//").next().unwrap_or("").trim();
        let size = match dir {
            ".byte" => 1,
            ".short" | ".hword" | ".2byte" | ".value" => 2,
            ".word" if arch.name == "x86_64" => 2,
            ".word" | ".long" | ".4byte" | ".int" => 4,
            ".quad" | ".xword" | ".8byte" => 8,
            ".zero" | ".space" => {
                let count: usize = arg
                    .parse()
                    .map_err(|_| format!("bad `{t}` in the bitfield probe"))?;
                bytes.extend(std::iter::repeat_n(0u8, count));
                continue;
            }
            ".size" => {
                objects[*i] = Some(std::mem::take(bytes));
                current = None;
                continue;
            }
            d if d.starts_with('.') => continue,
            _ => continue,
        };
        let v = parse_asm_int(arg).ok_or_else(|| format!("bad `{t}` in the bitfield probe"))?;
        bytes.extend_from_slice(&v.to_le_bytes()[..size]);
    }
    if let Some((i, bytes)) = current {
        objects[i] = Some(bytes);
    }
    objects
        .into_iter()
        .enumerate()
        .map(|(i, o)| o.ok_or_else(|| format!("object xsbf_{i} not found in the assembly")))
        .collect()
}

/// An integer operand of a data directive, as clang and gcc spell it: decimal, `0x` hex, or
/// negative decimal (two's complement in 64 bits).
pub(super) fn parse_asm_int(arg: &str) -> Option<u64> {
    if let Some(h) = arg.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(neg) = arg.strip_prefix('-') {
        neg.parse::<u64>().ok().map(|v| v.wrapping_neg())
    } else {
        arg.parse().ok()
    }
}

/// The set bits of an object whose one bitfield was set to all ones: (first bit, width).
pub(super) fn bit_run(bytes: &[u8]) -> Option<(u64, u64)> {
    let bits: Vec<u64> = bytes
        .iter()
        .enumerate()
        .flat_map(|(i, b)| {
            (0..8)
                .filter(move |k| b & (1 << k) != 0)
                .map(move |k| (i * 8 + k) as u64)
        })
        .collect();
    let (&first, &last) = (bits.first()?, bits.last()?);
    (last - first + 1 == bits.len() as u64).then_some((first, bits.len() as u64))
}

/// Reads `xsabi_N` values out of clang/gcc assembly (`.quad`, `.xword` or `.8byte`).
pub(super) fn parse_asm(asm: &str, n: usize) -> Result<Vec<u64>, String> {
    let mut values = vec![None; n];
    let mut pending: Option<usize> = None;
    for line in asm.lines() {
        let t = line.trim();
        // Labels may carry a trailing comment (`xsabi_5:   # @xsabi_5`).
        let first = t.split_whitespace().next().unwrap_or("");
        if let Some(label) = first.strip_suffix(':') {
            pending = label.strip_prefix("xsabi_").and_then(|i| i.parse().ok());
            continue;
        }
        if let Some(i) = pending {
            let mut words = t.split_whitespace();
            if let (Some(dir), Some(val)) = (words.next(), words.next()) {
                if dir == ".zero" && val == "8" {
                    // gcc's spelling of an all-zero 8-byte object.
                    if i < n {
                        values[i] = Some(0);
                    }
                    pending = None;
                } else if matches!(dir, ".quad" | ".xword" | ".8byte") {
                    if i < n {
                        values[i] = parse_asm_int(val.trim_end_matches(','));
                    }
                    pending = None;
                }
            }
        }
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| format!("probe value xsabi_{i} not found in the assembly")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asm_values_from_clang_and_gcc_spellings() {
        let asm =
            "xsabi_0:                  # @xsabi_0\n\t.quad\t48   # 0x30\n\t.size\txsabi_0, 8\n\
                   xsabi_1:\n\t.zero\t8\n\
                   xsabi_2:\n\t.xword\t-1\n";
        assert_eq!(parse_asm(asm, 3).unwrap(), vec![48, 0, u64::MAX]);
        assert!(
            parse_asm(asm, 4).is_err(),
            "a missing value is an error, not a zero"
        );
    }

    #[test]
    fn asm_objects_and_bit_runs() {
        let x86 = "xsbf_0:\n\t.zero\t30\n\t.byte\t15\n\t.zero\t1\n\t.size\txsbf_0, 32\n";
        let objs = parse_asm_objects(x86, ARCHES[0], 1).unwrap();
        assert_eq!(objs[0].len(), 32);
        assert_eq!(bit_run(&objs[0]), Some((240, 4)));
        // `.word` is 2 bytes on x86 and 4 on arm.
        let word = "xsbf_0:\n\t.word\t0xfff0\n\t.size\txsbf_0, 4\n";
        assert_eq!(parse_asm_objects(word, ARCHES[0], 1).unwrap()[0].len(), 2);
        assert_eq!(parse_asm_objects(word, ARCHES[1], 1).unwrap()[0].len(), 4);
        assert_eq!(bit_run(&[0b0101]), None, "two runs are not one bitfield");
    }
}
