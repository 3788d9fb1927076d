//! llama.cpp's GBNF grammars (the `grammar` field) rewritten in llguidance's Lark dialect: the
//! expression syntax is the same (sequences, `|`, groups, `* + ?`, `{m,n}`), so each token is
//! carried over: rule names made Lark-safe, `root` becomes `start`, strings unescaped and
//! re-quoted, character classes and `.` become regular expressions.

/// What went wrong, with the byte offset.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct GbnfError {
    pub what: String,
    pub at: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Define,
    Str(String),
    Class(String),
    Any,
    Op(String),
}

fn err<T>(what: &str, at: usize) -> Result<T, GbnfError> {
    Err(GbnfError { what: what.into(), at })
}

/// One escape after a backslash at `b[i]` (the backslash already consumed); the char and the
/// bytes it took.
fn escape(s: &str, i: usize) -> Result<(char, usize), GbnfError> {
    let b = s.as_bytes();
    let hex = |n: usize| -> Result<(char, usize), GbnfError> {
        let h = s.get(i + 1..i + 1 + n).ok_or(GbnfError { what: "a short escape".into(), at: i })?;
        let v = u32::from_str_radix(h, 16).map_err(|_| GbnfError { what: format!("a bad escape `{h}`"), at: i })?;
        Ok((char::from_u32(v).ok_or(GbnfError { what: "an escape outside Unicode".into(), at: i })?, n + 1))
    };
    match b.get(i) {
        Some(b'n') => Ok(('\n', 1)),
        Some(b't') => Ok(('\t', 1)),
        Some(b'r') => Ok(('\r', 1)),
        Some(b'x') => hex(2),
        Some(b'u') => hex(4),
        Some(b'U') => hex(8),
        Some(_) => {
            let c = s[i..].chars().next().expect("not at the end");
            Ok((c, c.len_utf8()))
        }
        None => err("a backslash at the end", i),
    }
}

fn tokens(src: &str) -> Result<Vec<Tok>, GbnfError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b':' if src[i..].starts_with("::=") => {
                out.push(Tok::Define);
                i += 3;
            }
            b'"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return err("an unterminated string", i),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            let (ch, n) = escape(src, i + 1)?;
                            s.push(ch);
                            i += 1 + n;
                        }
                        Some(_) => {
                            let ch = src[i..].chars().next().expect("in bounds");
                            s.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                i += 1;
                out.push(Tok::Str(s));
            }
            b'[' => {
                let start = i;
                let mut class = String::from("[");
                i += 1;
                if b.get(i) == Some(&b'^') {
                    class.push('^');
                    i += 1;
                }
                loop {
                    match b.get(i) {
                        None => return err("an unterminated character class", start),
                        Some(b']') => break,
                        Some(b'\\') => {
                            let (ch, n) = escape(src, i + 1)?;
                            class.push_str(&class_char(ch));
                            i += 1 + n;
                        }
                        Some(_) => {
                            let ch = src[i..].chars().next().expect("in bounds");
                            class.push_str(&if ch == '-' { "-".to_owned() } else { class_char(ch) });
                            i += ch.len_utf8();
                        }
                    }
                }
                i += 1;
                class.push(']');
                out.push(Tok::Class(class));
            }
            b'.' => {
                out.push(Tok::Any);
                i += 1;
            }
            b'(' | b')' | b'|' | b'*' | b'+' | b'?' => {
                out.push(Tok::Op((c as char).to_string()));
                i += 1;
            }
            b'{' => {
                let end = src[i..].find('}').ok_or(GbnfError { what: "an unterminated `{`".into(), at: i })?;
                let inner: String = src[i + 1..i + end].chars().filter(|c| !c.is_whitespace()).collect();
                if inner.is_empty() || !inner.chars().all(|c| c.is_ascii_digit() || c == ',') {
                    return err("a repetition other than {m}, {m,} or {m,n}", i);
                }
                out.push(Tok::Op(format!("{{{inner}}}")));
                i += end + 1;
            }
            c if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'-' || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Name(src[start..i].to_owned()));
            }
            _ => return err(&format!("an unexpected `{}`", src[i..].chars().next().unwrap_or('?')), i),
        }
    }
    Ok(out)
}

/// One character inside a regex class, escaped where a regex would read it otherwise.
fn class_char(c: char) -> String {
    match c {
        '\n' => "\\n".into(),
        '\t' => "\\t".into(),
        '\r' => "\\r".into(),
        '/' => "\\/".into(),
        c if "[]\\^-&~".contains(c) => format!("\\{c}"),
        c if (c as u32) < 0x20 => format!("\\x{{{:x}}}", c as u32),
        c => c.to_string(),
    }
}

fn rule_name(n: &str) -> String {
    if n == "root" {
        "start".into()
    } else {
        format!("g_{}", n.to_ascii_lowercase().replace('-', "_"))
    }
}

/// The same grammar in llguidance's Lark; `root` is where it starts.
pub fn to_lark(src: &str) -> Result<String, GbnfError> {
    let toks = tokens(src)?;
    let mut out = String::new();
    let mut rules = 0;
    let mut i = 0;
    while i < toks.len() {
        match (&toks[i], toks.get(i + 1)) {
            (Tok::Name(n), Some(Tok::Define)) => {
                if rules > 0 {
                    out.push('\n');
                }
                out.push_str(&rule_name(n));
                out.push(':');
                rules += 1;
                i += 2;
                continue;
            }
            _ if rules == 0 => return err("text before the first `name ::=`", 0),
            (Tok::Name(n), _) => out.push_str(&format!(" {}", rule_name(n))),
            (Tok::Define, _) => return err("a `::=` without a rule name", 0),
            (Tok::Str(s), _) if s.is_empty() => out.push_str(" \"\""),
            (Tok::Str(s), _) => out.push_str(&format!(" {}", serde_json::to_string(s).expect("strings serialize"))),
            (Tok::Class(c), _) => out.push_str(&format!(" /{c}/")),
            (Tok::Any, _) => out.push_str(" /(?s:.)/"),
            (Tok::Op(o), _) if o.starts_with('{') || matches!(o.as_str(), "*" | "+" | "?" | ")") => out.push_str(o),
            (Tok::Op(o), _) => out.push_str(&format!(" {o}")),
        }
        i += 1;
    }
    if !toks.iter().any(|t| *t == Tok::Name("root".into())) {
        return err("no `root` rule", 0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gbnf_becomes_lark() {
        let g = "# yes or no\nroot ::= answer \"\\n\"\nanswer ::= (\"yes\" | \"no\")\n  | [0-9]{1,3} item-list\nitem-list ::= [^\"\\\\/] .*";
        let lark = to_lark(g).unwrap();
        assert_eq!(lark, "start: g_answer \"\\n\"\ng_answer: ( \"yes\" | \"no\") | /[0-9]/{1,3} g_item_list\ng_item_list: /[^\"\\\\\\/]/ /(?s:.)/*");
    }

    #[test]
    fn broken_grammars_say_where() {
        assert_eq!(to_lark("root ::= \"abc").unwrap_err().what, "an unterminated string");
        assert_eq!(to_lark("answer ::= \"a\"").unwrap_err().what, "no `root` rule");
        assert!(to_lark("root ::= [a-").is_err());
        assert!(to_lark("root ::= a{x}").is_err());
    }
}
