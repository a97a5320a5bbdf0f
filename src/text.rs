//! Small text and clock helpers every layer uses (no domain knowledge): cutting a message to a length, quoting a
//! shell word, the first line of a failure, the current Unix time.

/// At most `n` characters of `s` (not bytes: never inside a character), marked with `…` where cut.
pub fn cut(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// At most `n` characters of `s`, cut in the middle (`…`) where longer: the end of an id tells a matrix's or seed
/// group's nodes apart (`sweep.0.001.s0`, `sweep.0.001.s1`).
pub fn cut_middle(s: &str, n: usize) -> String {
    let c: Vec<char> = s.chars().collect();
    if c.len() <= n || n == 0 {
        return if n == 0 { String::new() } else { s.to_string() };
    }
    let tail = n / 2;
    let head = n - 1 - tail;
    format!("{}…{}", c[..head].iter().collect::<String>(), c[c.len() - tail..].iter().collect::<String>())
}

/// `a` as one POSIX shell word: as is when it holds only characters no shell treats specially in an argument,
/// else in single quotes (a quote inside as `'\''`). Not shlex's `try_quote`, which also quotes `=`, `,` and `%`
/// (for brace expansion and interactive shells): the commands polyflow prints for you to run read `--set
/// a.b=1`, not `'a.b=1'` (the test checks shlex splits every word back as it was).
pub fn shell_word(a: &str) -> String {
    if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c)) {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// The first line of node `id`'s error text, without the `` node `ID`: `` it starts with.
pub fn failure_headline<'a>(error: &'a str, id: &str) -> &'a str {
    let first = error.lines().next().unwrap_or("");
    first.strip_prefix(&format!("node `{id}`: ")).unwrap_or(first)
}

/// Seconds since the Unix epoch (0 on a clock set before it).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `word` with its indefinite article: `a float`, `an array`, `an integer`.
pub fn a_or_an(word: &str) -> String {
    let vowel = word.chars().next().is_some_and(|c| "aeiouAEIOU".contains(c));
    format!("{} {word}", if vowel { "an" } else { "a" })
}

/// `n` and `noun`, plural unless `n` is 1: `1 blob`, `3 blobs`, `2 entries`, `2 processes` (regular English
/// plurals only).
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        return format!("1 {noun}");
    }
    let consonant_y = noun.strip_suffix('y').is_some_and(|stem| stem.ends_with(|c: char| !"aeiou".contains(c)));
    if consonant_y {
        format!("{n} {}ies", &noun[..noun.len() - 1])
    } else if ["s", "x", "z", "sh", "ch"].iter().any(|e| noun.ends_with(e)) {
        format!("{n} {noun}es")
    } else {
        format!("{n} {noun}s")
    }
}

/// `1.2s`, `340ms`, `3m05s`.
pub fn fmt_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_say_one_or_many() {
        assert_eq!(count(1, "blob"), "1 blob");
        assert_eq!(count(0, "blob"), "0 blobs");
        assert_eq!(count(2, "entry"), "2 entries");
        assert_eq!(count(2, "key"), "2 keys");
        assert_eq!(count(1, "cache entry"), "1 cache entry");
        assert_eq!(count(2, "process"), "2 processes");
        assert_eq!(count(3, "match"), "3 matches");
    }

    #[test]
    fn cut_counts_characters_and_marks_the_cut() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc…");
        assert_eq!(cut("ééé", 2), "éé…");
        assert_eq!(cut("", 0), "");
    }

    #[test]
    fn cut_middle_keeps_both_ends() {
        assert_eq!(cut_middle("sweep.0.001.s0", 20), "sweep.0.001.s0");
        assert_eq!(cut_middle("sweep.0.001.s0", 9), "swee…1.s0");
        assert_eq!(cut_middle("sweep.0.001.s0", 9).chars().count(), 9);
        assert_eq!(cut_middle("abc", 0), "");
    }

    #[test]
    fn shell_words_round_trip_through_shlex() {
        for a in ["plain", "a b", "it's", "$HOME", "", "--set=x.y=1", "naïve"] {
            let q = shell_word(a);
            assert_eq!(shlex::split(&q), Some(vec![a.to_string()]), "{a:?} → {q}");
        }
        assert_eq!(shell_word("pipelines/table2.toml"), "pipelines/table2.toml");
        assert_eq!(shell_word("tab.title=Other"), "tab.title=Other");
    }

    #[test]
    fn headline_drops_the_node_prefix() {
        assert_eq!(failure_headline("node `a`: exited 1\nmore", "a"), "exited 1");
        assert_eq!(failure_headline("other", "a"), "other");
        assert_eq!(failure_headline("", "a"), "");
    }
}
