//! "Did you mean" suggestions for misspelled keys and class names.

/// The candidate closest to `word` (ignoring case) if it is at most two edits
/// away, and fewer edits than `word` is long (so `x` does not suggest `rx`).
pub(super) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|&c| (distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|&(d, _)| d <= 2 && d < word.chars().count())
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// `" (did you mean `X`?)"` when a close candidate exists, else nothing.
pub(super) fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    match closest(word, candidates) {
        Some(c) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

/// Levenshtein distance between `a` and `b`, in characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("bindport", "bindport"), 0);
        assert_eq!(distance("bindprot", "bindport"), 2);
        assert_eq!(distance("rsptimout", "rsptimeout"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }

    #[test]
    fn suggests_only_close_keys() {
        let keys = ["bindip", "bindport", "connip", "connport"];
        assert_eq!(closest("bindprot", &keys), Some("bindport"));
        assert_eq!(closest("ConnPort", &keys), Some("connport"));
        assert_eq!(closest("listen", &keys), None);
        assert_eq!(closest("ip", &["rx"]), None);
        assert_eq!(did_you_mean("conip", &keys), " (did you mean `connip`?)");
        assert_eq!(did_you_mean("zzz", &keys), "");
    }
}
