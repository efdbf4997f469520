//! A structural check of AMQP-encoded values (AMQP 1.0 part 1) before they
//! reach serde_amqp's decoder: every size and count must fit in the bytes
//! there are, compound sizes must match their contents, and nesting is
//! bounded. serde_amqp trusts declared lengths (a sym32 claiming 4 GiB is
//! allocated before it is read) and panics on some inconsistent compounds;
//! the fuzzers found both (tests/fuzz/regressions/). A value that passes
//! here has lengths the decoder can rely on.

/// Deepest nesting of compound and described values accepted.
const MAX_DEPTH: u32 = 64;

/// Why a value is malformed.
pub type Malformed = String;

/// The length of the one whole value at the start of `buf`.
pub fn value_len(buf: &[u8]) -> Result<usize, Malformed> {
    value(buf, 0)
}

/// Checks that `buf` is exactly one value.
pub fn check_exact(buf: &[u8]) -> Result<(), Malformed> {
    let len = value_len(buf)?;
    if len != buf.len() {
        return Err(format!("{} bytes after the value", buf.len() - len));
    }
    Ok(())
}

fn value(buf: &[u8], depth: u32) -> Result<usize, Malformed> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH}"));
    }
    let (code, constructor) = constructor(buf, depth)?;
    Ok(constructor + body(code, &buf[constructor..], depth)?)
}

/// The format code and the length of the constructor (a descriptor
/// included) at the start of `buf`.
fn constructor(buf: &[u8], depth: u32) -> Result<(u8, usize), Malformed> {
    let Some(&code) = buf.first() else {
        return Err("a value is missing".into());
    };
    if code != 0x00 {
        return Ok((code, 1));
    }
    // Described: descriptor value, then the value's own constructor.
    let descriptor = value(&buf[1..], depth + 1)?;
    let (code, inner) = constructor(&buf[1 + descriptor..], depth + 1)?;
    if code == 0x00 {
        return Err("a descriptor of a descriptor".into());
    }
    Ok((code, 1 + descriptor + inner))
}

fn take(buf: &[u8], n: usize, what: &str) -> Result<(), Malformed> {
    if buf.len() < n {
        return Err(format!("{what} needs {n} bytes, {} left", buf.len()));
    }
    Ok(())
}

fn width_of(buf: &[u8], four: bool) -> Result<(usize, usize), Malformed> {
    if four {
        take(buf, 4, "a 4-byte size")?;
        Ok((
            u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize,
            4,
        ))
    } else {
        take(buf, 1, "a 1-byte size")?;
        Ok((usize::from(buf[0]), 1))
    }
}

/// The length of a value's encoding after its constructor.
fn body(code: u8, buf: &[u8], depth: u32) -> Result<usize, Malformed> {
    let fixed = match code {
        0x40..=0x45 => Some(0),
        0x50..=0x56 => Some(1),
        0x60 | 0x61 => Some(2),
        0x70..=0x74 => Some(4),
        0x80..=0x84 => Some(8),
        0x94 | 0x98 => Some(16),
        _ => None,
    };
    if let Some(n) = fixed {
        take(buf, n, "a fixed-width value")?;
        return Ok(n);
    }
    match code {
        // vbin, str, sym
        0xa0 | 0xa1 | 0xa3 | 0xb0 | 0xb1 | 0xb3 => {
            let (len, w) = width_of(buf, code & 0xf0 == 0xb0)?;
            take(&buf[w..], len, "a binary or string")?;
            Ok(w + len)
        }
        // list, map
        0xc0 | 0xc1 | 0xd0 | 0xd1 => {
            let four = code & 0xf0 == 0xd0;
            let (size, w) = width_of(buf, four)?;
            take(&buf[w..], size, "a list or map")?;
            let inner = &buf[w..w + size];
            let (count, cw) =
                width_of(inner, four).map_err(|_| "a list or map without its count".to_string())?;
            if code & 0x0f == 1 && count % 2 != 0 {
                return Err(format!("a map with an odd count {count}"));
            }
            let mut pos = cw;
            for _ in 0..count {
                if pos >= inner.len() {
                    return Err(format!("a list or map of {count} items ends early"));
                }
                pos += value(&inner[pos..], depth + 1)?;
            }
            if pos != inner.len() {
                return Err("a list or map with bytes after its items".into());
            }
            Ok(w + size)
        }
        // array
        0xe0 | 0xf0 => {
            let four = code == 0xf0;
            let (size, w) = width_of(buf, four)?;
            take(&buf[w..], size, "an array")?;
            let inner = &buf[w..w + size];
            let (count, cw) =
                width_of(inner, four).map_err(|_| "an array without its count".to_string())?;
            if count > inner.len() {
                return Err(format!(
                    "an array of {count} elements in {} bytes",
                    inner.len()
                ));
            }
            if count == 0 && cw == inner.len() {
                return Ok(w + size);
            }
            let (element, ctor) = constructor(&inner[cw..], depth + 1)?;
            let mut pos = cw + ctor;
            for _ in 0..count {
                pos += body(element, &inner[pos..], depth + 1)?;
            }
            if pos != inner.len() {
                return Err("an array with bytes after its elements".into());
            }
            Ok(w + size)
        }
        other => Err(format!("unknown format code 0x{other:02x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_values_pass_with_their_length() {
        // described list: open(container-id "con")
        let open = [
            0x00, 0x53, 0x10, 0xc0, 0x06, 0x01, 0xa1, 0x03, b'c', b'o', b'n',
        ];
        assert_eq!(value_len(&open), Ok(open.len()));
        // map8 {"a": 1}, array8 of two uints, list0, null
        assert_eq!(
            value_len(&[0xc1, 0x05, 0x02, 0xa1, 0x01, b'a', 0x43]),
            Ok(7)
        );
        assert_eq!(
            value_len(&[0xe0, 0x04, 0x02, 0x52, 0x01, 0x02, 0x00]),
            Ok(6)
        );
        assert_eq!(value_len(&[0x45]), Ok(1));
        check_exact(&[0x40]).unwrap();
    }

    #[test]
    fn lengths_beyond_the_bytes_are_refused() {
        // sym32 claiming 4 GiB
        assert!(value_len(&[0xb3, 0xff, 0xff, 0xff, 0xf0, b'x']).is_err());
        // map8 of size 0 (no room for its count)
        assert!(value_len(&[0xc1, 0x00]).is_err());
        // list8 claiming 3 items holding 1
        assert!(value_len(&[0xc0, 0x02, 0x03, 0x40]).is_err());
        // a map with an odd count
        assert!(value_len(&[0xc1, 0x02, 0x01, 0x40]).is_err());
        // an array of a billion nulls in 5 bytes
        assert!(value_len(&[0xf0, 0, 0, 0, 5, 0x3b, 0x9a, 0xca, 0x00, 0x40]).is_err());
        // unknown code, missing value
        assert!(value_len(&[0xff]).is_err());
        assert!(value_len(&[]).is_err());
    }

    #[test]
    fn nesting_is_bounded() {
        let mut deep = Vec::new();
        for _ in 0..1000 {
            deep.extend_from_slice(&[0x00, 0x53, 0x01]);
        }
        deep.push(0x40);
        assert!(value_len(&deep).is_err());
    }
}
