//! hearth's SentencePiece tokenizer (`model::spm`) on Gemma 3's real vocabulary against an
//! independent one: `tokenizers`' BPE built from every split of every piece, ranked by the score
//! of the merged piece (SentencePiece's merge order; hearth used it before it had its own), with
//! the same normalization, special tokens and byte fallback. Ids and decoded text must agree on
//! the corpus's source files and on strings chosen for their edges.

mod common;

use std::collections::HashMap;

use hearth::model::spm::{Spm, TYPE_CONTROL, TYPE_NORMAL, TYPE_USER};
use hearth::model::GgufFile;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{Vocab as BpeVocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormSequence};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, Tokenizer};

fn oracle(tokens: &[String], scores: &[f32], types: &[i64]) -> Tokenizer {
    let mut vocab: HashMap<String, u32> = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        vocab.entry(t.clone()).or_insert(i as u32);
    }
    let mut ranked: Vec<(f32, u32, &str, &str)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        if types[i] != TYPE_NORMAL || vocab.get(piece) != Some(&(i as u32)) {
            continue;
        }
        for (k, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(k);
            if vocab.contains_key(a) && vocab.contains_key(b) {
                ranked.push((scores[i], i as u32, a, b));
            }
        }
    }
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let merges: Vec<(String, String)> = ranked.into_iter().map(|(_, _, a, b)| (a.to_owned(), b.to_owned())).collect();
    let bpe = BPE::builder().vocab_and_merges(vocab.into_iter().collect::<BpeVocab>(), merges).byte_fallback(true).fuse_unk(true).build().unwrap();
    let mut tok = Tokenizer::new(bpe);
    let norm: NormalizerWrapper = NormSequence::new(vec![Prepend::new("▁".into()).into(), Replace::new(" ", "▁").unwrap().into()]).into();
    tok.with_normalizer(Some(norm));
    tok.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(vec![
        Replace::new("▁", " ").unwrap().into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ]))));
    let added: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, &t)| t == TYPE_CONTROL || t == TYPE_USER)
        .map(|(s, &t)| AddedToken::from(s.clone(), t == TYPE_CONTROL).normalized(false))
        .collect();
    tok.add_special_tokens(&added);
    tok
}

#[test]
fn spm_matches_an_independent_tokenizer_on_gemma3s_vocabulary() {
    let file = GgufFile::open(&common::model_path("gemma3-270m-q4_k_m")).unwrap();
    let array = |k: &str| file.get(k).and_then(|v| v.as_array()).unwrap_or_else(|| panic!("{k}"));
    let tokens: Vec<String> = array("tokenizer.ggml.tokens").iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    let scores: Vec<f32> = array("tokenizer.ggml.scores").iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let types: Vec<i64> = array("tokenizer.ggml.token_type").iter().map(|v| v.as_f64().unwrap() as i64).collect();
    assert_eq!(file.get("tokenizer.ggml.add_space_prefix").and_then(|v| v.as_bool()), Some(false), "Gemma 3 adds no space prefix");
    let ours = Spm::new(&tokens, &scores, &types, None, false);
    let theirs = oracle(&tokens, &scores, &types);
    // Gemma 3 adds no space prefix: take the oracle's off.
    let mut theirs = theirs;
    theirs.with_normalizer(Some(NormalizerWrapper::from(Replace::new(" ", "▁").unwrap())));
    let mut texts: Vec<String> = std::fs::read_dir("corpus")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "md"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(texts.len() >= 5 && texts.iter().all(|t| t.len() > 1000));
    for s in [
        "",
        " ",
        "   leading and  double  spaces ",
        "tabs\tand\nnew\r\nlines\n\n\n",
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
        "<start_of_turn><start_of_turn>x<end_of_turn",
        "ünïcödé 日本語のテキスト 🦀🦀 \u{200b} \u{10ffff}",
        "fn main() { println!(\"{}\", 1_000_000); }",
        "<unused0><unused99>tail",
    ] {
        texts.push(s.to_owned());
    }
    for text in &texts {
        let a = ours.encode(text);
        let b = theirs.encode_fast(text.as_str(), false).unwrap().get_ids().to_vec();
        if a != b {
            let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
            panic!("{:?}…: ids differ at {at}: ours {:?} theirs {:?}", &text[..text.len().min(40)], &a[at.saturating_sub(2)..(at + 4).min(a.len())], &b[at.saturating_sub(2)..(at + 4).min(b.len())]);
        }
        assert_eq!(ours.decode(&a), theirs.decode(&b, true).unwrap(), "{:?}…: decoded text", &text[..text.len().min(40)]);
    }
}
