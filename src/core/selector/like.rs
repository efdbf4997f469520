//! `LIKE` patterns, matched in one pass over the value.
//!
//! A pattern is cut at its `%`s into segments of literal characters and
//! `_`s. The first segment must match at the start of the value and the
//! last at its end (one segment, with no `%`, must match the whole value);
//! each segment between them is then found leftmost, each search starting
//! where the previous match ended. For patterns with only `%` wildcards and
//! fixed-length segments the leftmost choice is always right, so no match
//! is ever retried: a value is read once, whatever the pattern. A segment
//! of literal characters is found with the standard library's two-way
//! substring search; one with `_` with a bit-parallel matcher (shift-and,
//! one bit per pattern character), whose cost per character of the value
//! is one machine word per 64 pattern characters.

/// One position of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    /// This character.
    Lit(char),
    /// `_`: any one character.
    One,
}

/// A compiled `LIKE` pattern.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct LikePattern {
    /// The segments between `%`s: one when the pattern has no `%`, else
    /// the anchored first and last with the (non-empty) middle ones
    /// between them.
    parts: Vec<Segment>,
}

/// A run of a pattern between `%`s.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    /// Its positions.
    items: Vec<Item>,
    /// How it is found, when it is neither first nor last (those are only
    /// compared at the value's ends).
    search: Option<Search>,
}

/// How a middle segment is found in a value.
#[derive(Debug, Clone, PartialEq)]
enum Search {
    /// A plain string (no `_`): substring search.
    Text(String),
    /// With `_`: shift-and over [`Bitap`]'s masks.
    Bitap(Bitap),
}

/// Shift-and tables of a segment with `_`: for each character of a value,
/// the positions of the segment it may stand at.
#[derive(Debug, Clone, PartialEq)]
struct Bitap {
    /// Words per mask (one bit per position).
    words: usize,
    /// Masks, `words` each: the first has the `_` positions only; the
    /// others add one literal character's positions.
    masks: Vec<u64>,
    /// The mask index of each ASCII character.
    ascii: Vec<u16>,
    /// The mask index of other characters, sorted by character.
    others: Vec<(char, u16)>,
}

impl LikePattern {
    /// Compiles `pattern`, where `escape` (if given) makes the character
    /// after it literal.
    pub(super) fn new(pattern: &str, escape: Option<char>) -> Self {
        let mut parts = vec![Vec::new()];
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            let item = if Some(c) == escape {
                match chars.next() {
                    Some(n) => Item::Lit(n),
                    None => continue,
                }
            } else {
                match c {
                    '%' => {
                        parts.push(Vec::new());
                        continue;
                    }
                    '_' => Item::One,
                    c => Item::Lit(c),
                }
            };
            if let Some(last) = parts.last_mut() {
                last.push(item);
            }
        }
        // Empty segments between two `%`s constrain nothing.
        let n = parts.len();
        let parts = parts
            .into_iter()
            .enumerate()
            .filter(|(i, items)| *i == 0 || *i == n - 1 || !items.is_empty())
            .map(|(i, items)| Segment::new(items, i > 0 && i < n - 1))
            .collect();
        Self { parts }
    }

    /// Whether `value` matches.
    pub(super) fn matches(&self, value: &str) -> bool {
        let Some((first, rest)) = self.parts.split_first() else {
            return value.is_empty();
        };
        let Some((last, middle)) = rest.split_last() else {
            return first.matches_exactly(value);
        };
        let Some(after) = first.strip_prefix(value) else {
            return false;
        };
        let Some(mut between) = last.strip_suffix(after) else {
            return false;
        };
        for segment in middle {
            match segment.find_end(between) {
                Some(end) => between = &between[end..],
                None => return false,
            }
        }
        true
    }
}

impl Segment {
    /// A segment, with its search tables if it is a `middle` one.
    fn new(items: Vec<Item>, middle: bool) -> Self {
        let search = if !middle {
            None
        } else if items.contains(&Item::One) {
            Some(Search::Bitap(Bitap::new(&items)))
        } else {
            Some(Search::Text(
                items
                    .iter()
                    .map(|i| match i {
                        Item::Lit(c) => *c,
                        Item::One => '_',
                    })
                    .collect(),
            ))
        };
        Self { items, search }
    }

    /// Whether `value` is exactly this segment.
    fn matches_exactly(&self, value: &str) -> bool {
        let mut chars = value.chars();
        self.items
            .iter()
            .all(|item| chars.next().is_some_and(|c| item.accepts(c)))
            && chars.next().is_none()
    }

    /// The rest of `value` after this segment, if it starts with it.
    fn strip_prefix<'v>(&self, value: &'v str) -> Option<&'v str> {
        let mut chars = value.char_indices();
        let mut end = 0;
        for item in &self.items {
            let (at, c) = chars.next()?;
            if !item.accepts(c) {
                return None;
            }
            end = at + c.len_utf8();
        }
        Some(&value[end..])
    }

    /// `value` before this segment, if it ends with it.
    fn strip_suffix<'v>(&self, value: &'v str) -> Option<&'v str> {
        let mut chars = value.char_indices().rev();
        let mut start = value.len();
        for item in self.items.iter().rev() {
            let (at, c) = chars.next()?;
            if !item.accepts(c) {
                return None;
            }
            start = at;
        }
        Some(&value[..start])
    }

    /// Where the leftmost occurrence of this segment in `value` ends.
    fn find_end(&self, value: &str) -> Option<usize> {
        match self.search.as_ref()? {
            Search::Text(text) => value.find(text.as_str()).map(|at| at + text.len()),
            Search::Bitap(bitap) => bitap.find_end(value, self.items.len()),
        }
    }
}

impl Item {
    /// Whether this position accepts `c`.
    fn accepts(self, c: char) -> bool {
        match self {
            Item::Lit(l) => l == c,
            Item::One => true,
        }
    }
}

impl Bitap {
    /// The masks of `items`.
    fn new(items: &[Item]) -> Self {
        let words = items.len().div_ceil(64).max(1);
        let mut one = vec![0u64; words];
        let mut literals: Vec<char> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item {
                Item::One => one[i / 64] |= 1 << (i % 64),
                Item::Lit(c) => literals.push(*c),
            }
        }
        literals.sort_unstable();
        literals.dedup();
        let mut masks = one.clone();
        let mut ascii = vec![0u16; 128];
        let mut others = Vec::new();
        for (n, c) in literals.iter().enumerate() {
            let index = (n + 1) as u16;
            let mut mask = one.clone();
            for (i, item) in items.iter().enumerate() {
                if *item == Item::Lit(*c) {
                    mask[i / 64] |= 1 << (i % 64);
                }
            }
            masks.extend(mask);
            match ascii.get_mut(*c as usize) {
                Some(slot) => *slot = index,
                None => others.push((*c, index)),
            }
        }
        Self {
            words,
            masks,
            ascii,
            others,
        }
    }

    /// The mask of character `c`.
    fn mask(&self, c: char) -> &[u64] {
        let index = match self.ascii.get(c as usize) {
            Some(i) => *i,
            None => self
                .others
                .binary_search_by_key(&c, |(o, _)| *o)
                .map_or(0, |at| self.others[at].1),
        };
        let start = usize::from(index) * self.words;
        &self.masks[start..start + self.words]
    }

    /// Where the leftmost match of the segment (of `len` positions) in
    /// `value` ends: shift-and, where bit `i` of the state says the
    /// segment's first `i + 1` positions match the value up to here.
    fn find_end(&self, value: &str, len: usize) -> Option<usize> {
        let top = len - 1;
        let mut state = vec![0u64; self.words];
        for (at, c) in value.char_indices() {
            let mask = self.mask(c);
            let mut carry = 1;
            for (word, m) in state.iter_mut().zip(mask) {
                let next_carry = *word >> 63;
                *word = ((*word << 1) | carry) & m;
                carry = next_carry;
            }
            if state[top / 64] & (1 << (top % 64)) != 0 {
                return Some(at + c.len_utf8());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::LikePattern;
    use crate::core::selector::tests::textbook_like as reference;

    #[test]
    fn agrees_with_the_dynamic_program() {
        let patterns = [
            "",
            "%",
            "%%",
            "a",
            "_",
            "a%",
            "%a",
            "%a%",
            "a_c",
            "a%c",
            "%_%",
            "_%_",
            "%ab%ba%",
            "a_%_b",
            "%a_b%c_d%",
            "__",
            "%é_%",
            "a%%b",
            "%_b_%",
            "%aa_aa%",
            "ab%\\%",
            "x\\_%",
        ];
        let values = [
            "", "a", "b", "ab", "abc", "aXc", "abba", "aab_ba", "ba", "aaXaab", "é1", "xé2y",
            "a_b", "aQbZcTd", "a%", "x_", "xy", "aaXaaYaa", "%%", "abab",
        ];
        for p in patterns {
            let compiled = LikePattern::new(p, Some('\\'));
            for v in values {
                assert_eq!(
                    compiled.matches(v),
                    reference(v, p, '\\'),
                    "{v:?} LIKE {p:?}"
                );
            }
        }
    }

    #[test]
    fn long_segments_with_wildcards_span_several_words() {
        let segment: String = (0..150)
            .map(|i| if i % 7 == 0 { '_' } else { 'a' })
            .collect();
        let pattern = format!("%b{segment}c%");
        let compiled = LikePattern::new(&pattern, None);
        let hit = format!("zzb{}czz", "a".repeat(150));
        assert!(compiled.matches(&hit));
        assert!(reference(&hit, &pattern, '\\'));
        let miss = format!("zzb{}czz", "a".repeat(149));
        assert!(!compiled.matches(&miss));
    }

    #[test]
    fn the_worst_pattern_reads_a_long_value_once() {
        // 256 characters of `%_` against 300 KB: the dynamic program does
        // 77 million steps; one pass does 300 thousand.
        let pattern = format!("{}z", "%_".repeat(127));
        let value = "a".repeat(300_000);
        let compiled = LikePattern::new(&pattern, None);
        assert!(!compiled.matches(&value));
        assert!(compiled.matches(&format!("{value}z")));
    }
}
