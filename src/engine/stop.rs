//! Stop strings: text is released only once it cannot be the start of a stop string, so a stop
//! string split across tokens is still caught and never shown.

#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    pending: String,
}

/// What one piece of text did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopStep {
    /// Text that is safe to show.
    pub emit: String,
    /// A stop string was found; nothing after it may be shown.
    pub stopped: bool,
}

impl StopStrings {
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), pending: String::new() }
    }

    pub fn push(&mut self, piece: &str) -> StopStep {
        self.pending.push_str(piece);
        if let Some(at) = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min() {
            let emit = self.pending[..at].to_owned();
            self.pending.clear();
            return StopStep { emit, stopped: true };
        }
        // Hold back the longest tail that could still grow into a stop string.
        let hold = self
            .pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.pending[i..])))
            .unwrap_or(self.pending.len());
        let emit = self.pending[..hold].to_owned();
        self.pending.drain(..hold);
        StopStep { emit, stopped: false }
    }

    /// Releases held-back text at the end of generation.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut s = StopStrings::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let step = s.push(p);
            out.push_str(&step.emit);
            if step.stopped {
                return (out, true);
            }
        }
        out.push_str(&s.finish());
        (out, false)
    }

    #[test]
    fn a_stop_split_across_pieces_is_caught_and_hidden() {
        assert_eq!(feed(&["\n\n"], &["Hello", "\n", "\nWorld"]), ("Hello".into(), true));
        assert_eq!(feed(&["END"], &["abc E", "N", "D tail"]), ("abc ".into(), true));
    }

    #[test]
    fn text_that_only_looks_like_a_stop_is_released() {
        assert_eq!(feed(&["END"], &["abc E", "N", "x"]), ("abc ENx".into(), false));
        assert_eq!(feed(&["END"], &["abc EN"]), ("abc EN".into(), false));
        assert_eq!(feed(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        assert_eq!(feed(&["b", "a"], &["xxab"]), ("xx".into(), true));
    }

    #[test]
    fn held_text_is_released_as_soon_as_it_cannot_match() {
        let mut s = StopStrings::new(vec!["</s>".into()]);
        assert_eq!(s.push("a<").emit, "a");
        assert_eq!(s.push("b").emit, "<b");
        assert_eq!(s.push("é</").emit, "é");
    }
}
