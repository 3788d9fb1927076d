//! SentencePiece BPE as llama.cpp runs it (`llm_tokenizer_spm`): the text's characters are merged
//! pairwise, always the adjacent pair whose joined piece scores highest, with byte fallback for
//! what no piece covers; special tokens are cut out of the text first. The pieces live in one
//! string with an index sorted by text, about 10 MB for Gemma 3's 262k-piece vocabulary, where
//! building `tokenizers`' BPE from every split of every piece (513k merges) held over 100 MB.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// GGUF token types.
pub const TYPE_NORMAL: i64 = 1;
pub const TYPE_CONTROL: i64 = 3;
pub const TYPE_USER: i64 = 4;
pub const TYPE_BYTE: i64 = 6;

/// The space SentencePiece stores as "▁".
const SPACE: &str = "\u{2581}";

pub struct Spm {
    /// Every piece's text, one after another; piece `i` is `text[start[i]..start[i + 1]]`.
    text: String,
    start: Vec<u32>,
    scores: Vec<f32>,
    types: Vec<i8>,
    /// Normal and user-defined piece ids sorted by text, for lookups.
    sorted: Vec<u32>,
    /// The tokens cut out of the text before merging (control and user-defined), by text.
    special: HashMap<String, u32>,
    /// Their lengths in bytes, longest first.
    special_lens: Vec<usize>,
    /// Byte `b`'s fallback piece `<0xBB>`.
    bytes: [Option<u32>; 256],
    unk: Option<u32>,
    space_prefix: bool,
}

/// A candidate merge of the symbols at `left` and its right neighbour, `len` bytes in all.
struct Bigram {
    score: f32,
    left: usize,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// Highest score first, then the leftmost pair (llama.cpp's order).
    fn cmp(&self, o: &Self) -> Ordering {
        self.score.total_cmp(&o.score).then(o.left.cmp(&self.left))
    }
}

/// One symbol of the text being merged: bytes `at..at + len`, linked to its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    at: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    pub fn new(tokens: &[String], scores: &[f32], types: &[i64], unk: Option<u32>, space_prefix: bool) -> Spm {
        let mut text = String::with_capacity(tokens.iter().map(String::len).sum());
        let mut start = Vec::with_capacity(tokens.len() + 1);
        for t in tokens {
            start.push(text.len() as u32);
            text.push_str(t);
        }
        start.push(text.len() as u32);
        let mut bytes = [None; 256];
        let mut special = HashMap::new();
        for (i, (t, &ty)) in tokens.iter().zip(types).enumerate() {
            if ty == TYPE_BYTE {
                if let Some(b) = t.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    bytes[b as usize] = Some(i as u32);
                }
            } else if (ty == TYPE_CONTROL || ty == TYPE_USER) && !t.is_empty() {
                special.entry(t.clone()).or_insert(i as u32);
            }
        }
        let mut special_lens: Vec<usize> = special.keys().map(String::len).collect();
        special_lens.sort_unstable_by(|a, b| b.cmp(a));
        special_lens.dedup();
        let types: Vec<i8> = types.iter().map(|&t| t as i8).collect();
        let mut spm = Spm { text, start, scores: scores.to_vec(), types, sorted: Vec::new(), special, special_lens, bytes, unk, space_prefix };
        let mut sorted: Vec<u32> = (0..tokens.len() as u32).filter(|&i| matches!(spm.types[i as usize] as i64, TYPE_NORMAL | TYPE_USER)).collect();
        // Stable, so that of equal texts the lowest id comes first and is the one found.
        sorted.sort_by(|&a, &b| spm.piece(a).cmp(spm.piece(b)));
        spm.sorted = sorted;
        spm
    }

    fn piece(&self, id: u32) -> &str {
        &self.text[self.start[id as usize] as usize..self.start[id as usize + 1] as usize]
    }

    /// The id of a normal or user-defined piece with exactly this text.
    fn find(&self, s: &str) -> Option<u32> {
        let at = self.sorted.partition_point(|&i| self.piece(i) < s);
        self.sorted.get(at).copied().filter(|&i| self.piece(i) == s)
    }

    /// The ids of `text`: special tokens where their text appears, the rest merged.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut plain = 0;
        let mut at = 0;
        while at < text.len() {
            let found = self.special_lens.iter().find_map(|&len| {
                let s = text.get(at..at + len)?;
                self.special.get(s).map(|&id| (id, len))
            });
            match found {
                Some((id, len)) => {
                    self.encode_plain(&text[plain..at], &mut ids);
                    ids.push(id);
                    at += len;
                    plain = at;
                }
                None => at += text[at..].chars().next().map_or(1, char::len_utf8),
            }
        }
        self.encode_plain(&text[plain..], &mut ids);
        ids
    }

    /// Text without special tokens: spaces as "▁" (and one in front, when the model wants it).
    fn encode_plain(&self, text: &str, ids: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let text = text.replace(super::tokenizer::ESCAPE, "");
        if text.is_empty() {
            return;
        }
        let mut s = String::with_capacity(text.len() + 3);
        if self.space_prefix {
            s.push_str(SPACE);
        }
        s.push_str(&text.replace(' ', SPACE));
        let mut sym: Vec<Symbol> = Vec::new();
        for (at, c) in s.char_indices() {
            let i = sym.len();
            sym.push(Symbol { at, len: c.len_utf8(), prev: i.checked_sub(1), next: None });
            if i > 0 {
                sym[i - 1].next = Some(i);
            }
        }
        let mut heap = BinaryHeap::new();
        let bigram = |sym: &[Symbol], left: usize, heap: &mut BinaryHeap<Bigram>| {
            let Some(right) = sym[left].next else { return };
            let len = sym[left].len + sym[right].len;
            if let Some(id) = self.find(&s[sym[left].at..sym[left].at + len]) {
                heap.push(Bigram { score: self.scores[id as usize], left, len });
            }
        };
        for i in 0..sym.len() {
            bigram(&sym, i, &mut heap);
        }
        while let Some(b) = heap.pop() {
            let left = b.left;
            let Some(right) = sym[left].next else { continue };
            // Stale: one side was merged since this pair was scored.
            if sym[left].len == 0 || sym[left].len + sym[right].len != b.len {
                continue;
            }
            sym[left].len = b.len;
            sym[left].next = sym[right].next;
            sym[right].len = 0;
            if let Some(n) = sym[right].next {
                sym[n].prev = Some(left);
            }
            if let Some(p) = sym[left].prev {
                bigram(&sym, p, &mut heap);
            }
            bigram(&sym, left, &mut heap);
        }
        let mut i = Some(0).filter(|_| !sym.is_empty());
        while let Some(k) = i {
            let piece = &s[sym[k].at..sym[k].at + sym[k].len];
            match self.find(piece) {
                Some(id) => ids.push(id),
                None => {
                    for b in piece.bytes() {
                        ids.extend(self.bytes[b as usize].or(self.unk));
                    }
                }
            }
            i = sym[k].next;
        }
    }

    /// The text of `ids`: "▁" back to spaces, byte pieces to their bytes, control tokens left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out: Vec<u8> = Vec::new();
        for &id in ids {
            let Some(&ty) = self.types.get(id as usize) else { continue };
            match ty as i64 {
                TYPE_CONTROL => {}
                TYPE_BYTE => match self.bytes.iter().position(|&b| b == Some(id)) {
                    Some(b) => out.push(b as u8),
                    None => out.extend_from_slice(self.piece(id).as_bytes()),
                },
                _ => out.extend_from_slice(self.piece(id).replace(SPACE, " ").as_bytes()),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
