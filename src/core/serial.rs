//! Serial-number arithmetic (RFC 1982) for AMQP's counts: delivery counts
//! and transfer ids wrap, so "how far ahead" is a difference modulo 2³²,
//! meaningful below 2³¹. Credit and windows are plain unsigned amounts:
//! any value, up to 2³² − 1, is that much.

/// What is left of `amount`, granted when the counter stood at
/// `granted_at`, now that it stands at `now`: the steps taken since use it
/// up. A counter behind the grant (a peer's stale or wrong count) has used
/// none of it.
pub fn remaining(amount: u32, granted_at: u32, now: u32) -> u32 {
    let used = now.wrapping_sub(granted_at);
    if used < (1 << 31) {
        amount.saturating_sub(used)
    } else {
        amount
    }
}

#[cfg(test)]
mod tests {
    use super::remaining;

    #[test]
    fn any_amount_is_an_amount_and_counts_wrap() {
        assert_eq!(remaining(u32::MAX, 7, 7), u32::MAX);
        assert_eq!(remaining(1 << 31, 0, 0), 1 << 31);
        assert_eq!(remaining(1 << 31, 0, 5), (1 << 31) - 5);
        assert_eq!(
            remaining(10, u32::MAX - 1, 2),
            6,
            "four steps across the wrap"
        );
        assert_eq!(remaining(3, 0, 5), 0, "more taken than granted");
        assert_eq!(remaining(3, 5, 0), 3, "a counter behind the grant");
    }
}
