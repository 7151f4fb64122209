//! The Redis Cluster hash slot of a key.
//!
//! Redis Cluster maps every key to one of 16384 slots with CRC16 (the
//! XMODEM/CCITT variant of Redis's src/crc16.c) of the key modulo 16384. A
//! key containing a hash tag `{...}` is hashed on the tag only, so related
//! keys (`{user1000}.following`, `{user1000}.followers`) share a slot. The
//! proxy uses the slot to route and partition exactly as a cluster would.

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// CRC16/XMODEM: polynomial x^16 + x^12 + x^5 + 1 (0x1021), initial value 0,
/// no reflection, no final xor. Table of the CRC of every byte value, built
/// at compile time.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = (byte as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
};

/// CRC16/XMODEM of `data`, the checksum Redis Cluster hashes keys with.
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The part of `key` Redis hashes: the content of the first `{...}` when
/// there is a `}` after the first `{` and something between them, otherwise
/// the whole key. As in Redis's `keyHashSlot`: `foo{}{bar}` hashes whole
/// (the first tag is empty) and `foo{{bar}}` hashes `{bar`.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let rest = &key[open + 1..];
    match rest.iter().position(|&b| b == b'}') {
        Some(close) if close > 0 => &rest[..close],
        _ => key,
    }
}

/// The cluster hash slot (0..16384) of `key`, honouring hash tags.
pub fn hash_slot(key: &[u8]) -> u16 {
    // 16384 is a power of two: the modulo is a mask.
    crc16(hash_tag(key)) & (SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bit-at-a-time CRC16/XMODEM, to check the table against.
    fn crc16_bitwise(data: &[u8]) -> u16 {
        let mut crc = 0u16;
        for &b in data {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    #[test]
    fn crc16_known_values() {
        // The standard CRC16/XMODEM check value, also Redis's crc16.c test.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
        assert_eq!(CRC16_TABLE[1], 0x1021);
        assert_eq!(CRC16_TABLE[255], 0x1EF0);
    }

    #[test]
    fn slots_of_known_keys() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"bar"), 5061);
        assert_eq!(hash_slot(b""), 0);
        assert_eq!(hash_slot(b"{user1000}.following"), 3443);
        assert_eq!(hash_slot(b"foo{}{bar}"), 8363);
        assert_eq!(hash_slot(b"foo{{bar}}zap"), 4015);
        assert_eq!(hash_slot(b"}{x}"), 16287);
        assert_eq!(hash_slot(b"{}"), 15257);
        assert_eq!(hash_slot(b"123456789"), 0x31C3); // < 16384, so unchanged
    }

    #[test]
    fn hash_tags() {
        assert_eq!(
            hash_slot(b"{user1000}.following"),
            hash_slot(b"{user1000}.followers")
        );
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"user1000"));
        assert_eq!(hash_slot(b"x{foo}y"), hash_slot(b"foo"));
        // Empty first tag: the whole key.
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        // The first '}' after the first '{'.
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_slot(b"foo{{bar}}zap"), hash_slot(b"{bar"));
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        // Unclosed or never opened: the whole key.
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
        assert_eq!(hash_tag(b"foo}bar{"), b"foo}bar{");
        assert_eq!(hash_tag(b"}{x}"), b"x");
        assert_eq!(hash_tag(b"{}"), b"{}");
    }

    proptest! {
        #[test]
        fn table_matches_bitwise(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(crc16(&data), crc16_bitwise(&data));
            prop_assert!(hash_slot(&data) < SLOTS);
        }
    }
}
