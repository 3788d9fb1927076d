//! Model names clients send: the served id or the file's name, an `--alias` (globs such as
//! `claude-*`), or, unless `--strict-model-names`, any other name, served by the one model (clients
//! pick names of their own, such as Claude Code's `claude-haiku-4-5` for background calls).

use crate::engine::ModelInfo;

use super::error::ApiError;

/// One `--alias NAME=MODEL`: `NAME` may hold `*` wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub pattern: String,
    pub model: String,
}

impl std::str::FromStr for Alias {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((p, m)) if !p.trim().is_empty() && !m.trim().is_empty() => Ok(Alias { pattern: p.trim().into(), model: m.trim().into() }),
            _ => Err(format!("`{s}` is not NAME=MODEL (NAME may use * wildcards, as in claude-*=qwen2.5-coder-1.5b)")),
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

/// How asked names map to the served model.
#[derive(Debug, Clone, Default)]
pub struct ModelNames {
    pub aliases: Vec<Alias>,
    /// Refuse names that are neither the model's nor an alias (404, as OpenAI does).
    pub strict: bool,
}

impl ModelNames {
    /// The name to answer with (the one asked, or the served id when none was); 404 for a name
    /// this server refuses.
    pub fn resolve(&self, asked: Option<&str>, info: &ModelInfo) -> Result<String, ApiError> {
        let asked = match asked.map(str::trim) {
            None | Some("") => return Ok(info.id.clone()),
            Some(a) => a,
        };
        if asked == info.id || asked == info.name {
            return Ok(asked.to_owned());
        }
        if let Some(a) = self.aliases.iter().find(|a| glob(&a.pattern, asked)) {
            if a.model == info.id || a.model == info.name {
                return Ok(asked.to_owned());
            }
            return Err(ApiError::model_not_found(asked, &info.id));
        }
        if self.strict {
            return Err(ApiError::model_not_found(asked, &info.id));
        }
        Ok(asked.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_shells_do() {
        assert!(glob("claude-*", "claude-sonnet-4-5"));
        assert!(glob("*", "anything"));
        assert!(glob("gpt-*-mini", "gpt-4o-mini"));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("claude-*", "gpt-4o"));
        assert!(!glob("a*b", "ab-"));
        assert!(!glob("exact", "exactly"));
        assert!(glob("aa*aa", "aaaa") && !glob("aa*aa", "aaa"));
        assert_eq!("claude-*=smol".parse::<Alias>().unwrap(), Alias { pattern: "claude-*".into(), model: "smol".into() });
        assert!("nomodel".parse::<Alias>().is_err() && "=x".parse::<Alias>().is_err());
    }
}
