//! Reading bindgen's output back: the structs, unions, constants, aliases, bitfields and
//! derived traits of a generated module, for the ABI probe and the next areas.

use std::collections::{BTreeMap, BTreeSet};

use super::bindings::{Traits, ALL_TRAITS};

/// Items found in one generated module.
#[derive(Clone, Debug, Default)]
pub(super) struct Items {
    /// Named structs and unions: (name, is_union, fields (Rust names, not bitfields/anonymous)).
    pub(super) types: Vec<(String, bool, Vec<String>)>,
    /// `pub const` names (integers).
    pub(super) consts: Vec<String>,
    /// `pub const` names (byte strings).
    pub(super) string_consts: Vec<String>,
    /// `pub type` names.
    pub(super) aliases: Vec<String>,
    /// What each struct/union derives or implements.
    pub(super) traits: Vec<(String, Traits)>,
    /// `pub type` name and right-hand side.
    pub(super) alias_targets: Vec<(String, String)>,
    /// Bitfield accessors: (type, field, unit field (`_bitfield_N`), bit offset in the unit, width).
    pub(super) bitfields: Vec<Bitfield>,
    /// Every member of every struct/union, anonymous ones included: (type, field, field type).
    pub(super) members: Vec<(String, String, String)>,
}

/// A bitfield as bindgen laid it out.
#[derive(Clone, Debug)]
pub(super) struct Bitfield {
    pub(super) ty: String,
    pub(super) field: String,
    pub(super) unit: String,
    pub(super) bit: u64,
    pub(super) width: u64,
}

/// Reads the bitfield accessors of bindgen's output: in `impl T {`, a `pub fn set_F(&mut self, ..)`
/// whose body calls `self._bitfield_N.set_const::<OFFSETusize, WIDTHu8>(..)`.
pub(super) fn scan_bitfields(code: &str) -> Vec<Bitfield> {
    let mut out = Vec::new();
    let mut ty: Option<String> = None;
    let mut setter: Option<String> = None;
    for line in code.lines() {
        if let Some(rest) = line.strip_prefix("impl ") {
            ty = rest
                .strip_suffix(" {")
                .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .map(str::to_string);
            continue;
        }
        if line == "}" {
            ty = None;
            continue;
        }
        let Some(t) = &ty else { continue };
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("pub fn set_") {
            setter = rest
                .split_once("(&mut self, val: ")
                .map(|(f, _)| f.to_string());
            continue;
        }
        if let (Some(f), Some((unit, rest))) = (&setter, l.split_once(".set_const::<")) {
            let unit = unit.trim_start_matches("self.").to_string();
            let nums: Vec<u64> = rest
                .split(['<', '>', ','])
                .take(2)
                .filter_map(|n| {
                    n.trim()
                        .trim_end_matches("usize")
                        .trim_end_matches("u8")
                        .parse()
                        .ok()
                })
                .collect();
            if let [bit, width] = nums[..] {
                out.push(Bitfield {
                    ty: t.clone(),
                    field: f.clone(),
                    unit,
                    bit,
                    width,
                });
            }
            setter = None;
        }
    }
    out
}

/// The traits of a type alias's right-hand side.
pub(super) fn alias_traits(rhs: &str, known: &BTreeMap<String, Traits>) -> Option<Traits> {
    let rhs = rhs.trim();
    let prim = rhs.strip_prefix("::core::ffi::").unwrap_or(rhs);
    if matches!(
        prim,
        "u8" | "u16"
            | "u32"
            | "u64"
            | "u128"
            | "i8"
            | "i16"
            | "i32"
            | "i64"
            | "i128"
            | "usize"
            | "isize"
            | "bool"
            | "f32"
            | "f64"
            | "c_char"
            | "c_schar"
            | "c_uchar"
            | "c_short"
            | "c_ushort"
            | "c_int"
            | "c_uint"
            | "c_long"
            | "c_ulong"
            | "c_longlong"
            | "c_ulonglong"
            | "c_void"
    ) || rhs.starts_with("::core::option::Option<")
    {
        return Some(ALL_TRAITS);
    }
    if rhs.starts_with("*mut ") || rhs.starts_with("*const ") {
        return Some(Traits {
            default: Some(false),
            ..ALL_TRAITS
        });
    }
    known.get(rhs).copied()
}

impl Items {
    pub(super) fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.types
            .iter()
            .map(|t| t.0.clone())
            .chain(self.consts.iter().cloned())
            .chain(self.string_consts.iter().cloned())
            .chain(self.aliases.iter().cloned())
    }
}

/// Reads bindgen's (prettyplease-formatted) output: top-level structs, unions, consts and type
/// aliases, and the named fields of the structs and unions.
pub(super) fn scan_items(code: &str) -> Items {
    let mut items = Items::default();
    let mut current: Option<(String, bool, Vec<String>)> = None;
    let mut derives = String::new();
    let mut manual_default: BTreeSet<String> = BTreeSet::new();
    let mut derived: Vec<(String, String)> = Vec::new();
    for line in code.lines() {
        if let Some(rest) = line.strip_prefix("impl Default for ") {
            manual_default.insert(rest.trim_end_matches(" {").trim().to_string());
        }
        if let Some((name, is_union, fields)) = &mut current {
            if line == "}" {
                items
                    .types
                    .push((std::mem::take(name), *is_union, std::mem::take(fields)));
                current = None;
            } else if let Some(rest) = line.strip_prefix("    pub ") {
                if let Some((field, ty)) = rest.split_once(':') {
                    let field = field.trim();
                    let ty = ty.trim().trim_end_matches(',');
                    items
                        .members
                        .push((name.clone(), field.to_string(), ty.to_string()));
                    if !field.starts_with("__bindgen")
                        && !field.starts_with("_bitfield")
                        && field != "bindgen_union_field"
                    {
                        fields.push(field.to_string());
                    }
                }
            }
            continue;
        }
        if line.starts_with("#[derive(") {
            derives = line.to_string();
            continue;
        }
        let (kind, rest) = if let Some(r) = line.strip_prefix("pub struct ") {
            ("struct", r)
        } else if let Some(r) = line.strip_prefix("pub union ") {
            ("union", r)
        } else if let Some(r) = line.strip_prefix("pub const ") {
            ("const", r)
        } else if let Some(r) = line.strip_prefix("pub type ") {
            ("type", r)
        } else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        match kind {
            "struct" | "union" => {
                derived.push((name.clone(), std::mem::take(&mut derives)));
                if rest.trim_end().ends_with('{') {
                    current = Some((name, kind == "union", Vec::new()));
                } else {
                    items.types.push((name, kind == "union", Vec::new()));
                }
            }
            "const" => {
                // Only integers are probed (byte strings such as `PRI_xen_pfn` are not).
                let ty = rest.split_once(':').map(|(_, t)| t.trim_start());
                if ty.is_some_and(|t| !t.starts_with('&')) {
                    items.consts.push(name);
                } else {
                    items.string_consts.push(name);
                }
            }
            _ => {
                if let Some((_, rhs)) = rest.split_once(" = ") {
                    let rhs = rhs.trim_end_matches(';').trim().to_string();
                    items.alias_targets.push((name.clone(), rhs));
                }
                items.aliases.push(name);
            }
        }
        if kind != "struct" && kind != "union" {
            derives.clear();
        }
    }
    items.bitfields = scan_bitfields(code);
    for (name, d) in derived {
        let has = |t: &str| {
            d.contains(&format!(" {t},"))
                || d.contains(&format!("({t},"))
                || d.contains(&format!(" {t})"))
                || d.contains(&format!("({t})"))
        };
        let default = if has("Default") {
            Some(true)
        } else if manual_default.contains(&name) {
            Some(false)
        } else {
            None
        };
        items.traits.push((
            name,
            Traits {
                copy: has("Copy"),
                debug: has("Debug"),
                default,
            },
        ));
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_bindgen_output() {
        let code = "#[repr(C)]\n#[derive(Debug, Default, Copy, Clone)]\npub struct s {\n    pub type_: u8,\n    pub _bitfield_align_1: [u8; 0],\n    pub _bitfield_1: __BindgenBitfieldUnit<[u8; 1usize]>,\n}\n\
                    impl s {\n    pub fn set_state(&mut self, val: u8) {\n        unsafe {\n            self._bitfield_1.set_const::<4usize, 2u8>(val as u64)\n        }\n    }\n}\n\
                    pub const X: u32 = 1;\npub const S: &[u8; 3] = b\"lx\\0\";\npub type t = s;\n";
        let items = scan_items(code);
        assert_eq!(
            items.types,
            vec![("s".to_string(), false, vec!["type_".to_string()])]
        );
        assert_eq!(items.consts, vec!["X"]);
        assert_eq!(items.string_consts, vec!["S"]);
        assert_eq!(
            items.alias_targets,
            vec![("t".to_string(), "s".to_string())]
        );
        let b = &items.bitfields[0];
        assert_eq!(
            (
                b.ty.as_str(),
                b.field.as_str(),
                b.unit.as_str(),
                b.bit,
                b.width
            ),
            ("s", "state", "_bitfield_1", 4, 2)
        );
        assert_eq!(items.traits[0].1, ALL_TRAITS);
    }
}
