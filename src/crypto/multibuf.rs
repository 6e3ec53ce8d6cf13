//! Multi-buffer AES-CBC encryption.
//!
//! CBC encryption is a chain: block *i* needs ciphertext *i − 1*, so one packet keeps
//! the AES unit waiting for each round's latency (≈ 4 cycles × 10–14 rounds per block)
//! while it could start a new block every cycle. Interleaving the chains of up to
//! [`LANES`] packets fills that pipeline: each step XORs the next plaintext block of
//! every active lane with its previous ciphertext and encrypts all lanes in one call of
//! the `aes` crate's parallel (AES-NI) block path. A lane that finishes takes the next
//! packet at once, so packets of different lengths share the pipeline (Intel's
//! multi-buffer job manager works the same way).

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes256, Block};

use super::CryptoError;

/// Chains encrypted side by side (the AES-NI pipeline depth the `aes` crate uses).
pub const LANES: usize = 8;

/// An AES block cipher, keyed once per SA.
#[derive(Clone)]
pub enum BlockCipher {
    /// AES-128.
    Aes128(Box<Aes128>),
    /// AES-256.
    Aes256(Box<Aes256>),
}

impl BlockCipher {
    /// Keys AES-128 or AES-256 by the key's length.
    pub fn new(key: &[u8]) -> Result<BlockCipher, CryptoError> {
        match key.len() {
            16 => Ok(BlockCipher::Aes128(Box::new(
                Aes128::new_from_slice(key).map_err(|_| CryptoError::Backend)?,
            ))),
            32 => Ok(BlockCipher::Aes256(Box::new(
                Aes256::new_from_slice(key).map_err(|_| CryptoError::Backend)?,
            ))),
            n => Err(CryptoError::KeyLength {
                expected: 16,
                got: n,
            }),
        }
    }

    /// Encrypts independent blocks (ECB), pipelined.
    #[inline]
    pub fn encrypt_blocks(&self, blocks: &mut [Block]) {
        match self {
            BlockCipher::Aes128(c) => c.encrypt_blocks(blocks),
            BlockCipher::Aes256(c) => c.encrypt_blocks(blocks),
        }
    }
}

struct Lane<'a> {
    data: &'a mut [u8],
    pos: usize,
    prev: u128,
}

/// CBC-encrypts every job in place. Each job is (data, IV); `data.len()` must be a
/// multiple of 16 (jobs that are not are left untouched and reported by index through
/// `bad`). Up to [`LANES`] chains advance together.
pub fn cbc_encrypt<'a, I>(cipher: &BlockCipher, jobs: I, mut bad: impl FnMut(usize))
where
    I: IntoIterator<Item = (&'a mut [u8], [u8; 16])>,
{
    let mut jobs = jobs.into_iter().enumerate();
    let mut lanes: [Option<Lane<'a>>; LANES] = [const { None }; LANES];
    let mut active = 0usize;
    let mut blocks = [Block::default(); LANES];
    loop {
        // Refill empty lanes; lanes[..active] are always occupied.
        while active < LANES {
            match jobs.next() {
                Some((_, ([], _))) => {}
                Some((i, (data, _))) if !data.len().is_multiple_of(16) => bad(i),
                Some((_, (data, iv))) => {
                    lanes[active] = Some(Lane {
                        data,
                        pos: 0,
                        prev: u128::from_ne_bytes(iv),
                    });
                    active += 1;
                }
                None => break,
            }
        }
        if active == 0 {
            return;
        }
        // Run as many steps as the shortest lane allows before any bookkeeping.
        let steps = lanes[..active]
            .iter()
            .flatten()
            .map(|l| (l.data.len() - l.pos) / 16)
            .min()
            .unwrap_or(0);
        for _ in 0..steps {
            for (lane, block) in lanes[..active].iter_mut().flatten().zip(blocks.iter_mut()) {
                let p = read_block(&lane.data[lane.pos..lane.pos + 16]);
                *block = Block::from((p ^ lane.prev).to_ne_bytes());
            }
            cipher.encrypt_blocks(&mut blocks[..active]);
            for (lane, block) in lanes[..active].iter_mut().flatten().zip(blocks.iter()) {
                let c: [u8; 16] = (*block).into();
                lane.data[lane.pos..lane.pos + 16].copy_from_slice(&c);
                lane.prev = u128::from_ne_bytes(c);
                lane.pos += 16;
            }
        }
        // Retire finished lanes, keeping lanes[..active] compact.
        let mut i = 0;
        while i < active {
            let done = lanes[i].as_ref().is_none_or(|l| l.pos >= l.data.len());
            if done {
                active -= 1;
                lanes.swap(i, active);
                lanes[active] = None;
            } else {
                i += 1;
            }
        }
    }
}

/// CBC-encrypts one buffer (a single lane); `data.len()` must be a multiple of 16.
pub fn cbc_encrypt_one(cipher: &BlockCipher, data: &mut [u8], iv: [u8; 16]) {
    let mut prev = u128::from_ne_bytes(iv);
    for chunk in data.chunks_exact_mut(16) {
        let mut b = [Block::from((read_block(chunk) ^ prev).to_ne_bytes())];
        cipher.encrypt_blocks(&mut b);
        let c: [u8; 16] = b[0].into();
        chunk.copy_from_slice(&c);
        prev = u128::from_ne_bytes(c);
    }
}

#[inline]
fn read_block(b: &[u8]) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    u128::from_ne_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3602 §4 Case #2: AES-128-CBC, 32 octets.
    #[test]
    fn rfc3602_case2_one_lane() {
        let key = hex("c286696d887c9aa0611bbb3e2025a45a");
        let iv: [u8; 16] = hex("562e17996d093d28ddb3ba695a2e6f58").try_into().unwrap();
        let mut data = hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
        let c = BlockCipher::new(&key).unwrap();
        cbc_encrypt(&c, [(&mut data[..], iv)], |_| panic!("bad job"));
        assert_eq!(
            data,
            hex("d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1")
        );
    }

    /// Many lanes of different lengths give the same bytes as one chain at a time.
    #[test]
    fn interleaved_equals_serial() {
        let c = BlockCipher::new(&[7u8; 32]).unwrap();
        let mut bufs: Vec<Vec<u8>> = (0..37)
            .map(|i| {
                (0..(16 * ((i * 7) % 23)))
                    .map(|j| (i * 31 + j) as u8)
                    .collect()
            })
            .collect();
        let ivs: Vec<[u8; 16]> = (0..37).map(|i| [i as u8; 16]).collect();
        let mut expect = bufs.clone();
        for (b, iv) in expect.iter_mut().zip(&ivs) {
            cbc_encrypt_one(&c, b, *iv);
        }
        cbc_encrypt(
            &c,
            bufs.iter_mut().map(|b| &mut b[..]).zip(ivs.iter().copied()),
            |_| panic!("bad job"),
        );
        assert_eq!(bufs, expect);
    }

    #[test]
    fn unaligned_job_is_reported_and_untouched() {
        let c = BlockCipher::new(&[1u8; 16]).unwrap();
        let mut a = vec![0u8; 32];
        let mut b = vec![5u8; 17];
        let mut seen = vec![];
        cbc_encrypt(
            &c,
            [(&mut a[..], [0u8; 16]), (&mut b[..], [0u8; 16])],
            |i| seen.push(i),
        );
        assert_eq!(seen, vec![1]);
        assert_eq!(b, vec![5u8; 17]);
        assert_ne!(a, vec![0u8; 32]);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
