//! The one rule for plugin names, used by the folder loader and watcher,
//! the HTTP API and `router.toml` (`config check`): 1 to 64 characters of
//! ASCII letters, digits, `-` and `_`, starting with a letter or digit.
//! A plugin's name is its file stem, so the rule is also the rule for the
//! files in the plugins folder.

/// Longest plugin name.
pub const MAX_NAME: usize = 64;

/// Checks a plugin name; the error says what is wrong.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!(
            "a plugin name cannot be empty: use 1 to {MAX_NAME} ASCII letters, digits, '-' and '_', starting with a letter or digit"
        ));
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "a plugin name is at most {MAX_NAME} characters (this one has {}): use 1 to {MAX_NAME} ASCII letters, digits, '-' and '_', starting with a letter or digit",
            name.chars().count()
        ));
    }
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let all_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !first_ok || !all_ok {
        return Err(format!(
            "{:?} is not a plugin name: use 1 to {MAX_NAME} ASCII letters, digits, '-' and '_', starting with a letter or digit (the file stem in the plugins folder)",
            truncate(name)
        ));
    }
    Ok(())
}

/// A valid name close to `name` (invalid characters become `-`), to suggest
/// a rename.
pub fn suggest(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while s.starts_with(['-', '_']) {
        s.remove(0);
    }
    let mut s: String = s.chars().take(MAX_NAME).collect();
    while s.ends_with('-') {
        s.pop();
    }
    if s.is_empty() { "my-plugin".into() } else { s }
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= 80 {
        return s.to_string();
    }
    let cut: String = s.chars().take(80).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "segment",
            "event-filter",
            "my_plugin2",
            "a",
            &"x".repeat(64),
        ] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "slack notify",
            "a.b",
            "../x",
            "-x",
            "é",
            "a/b",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(suggest("slack notify"), "slack-notify");
        assert_eq!(suggest("..x y"), "x-y");
        assert!(check_name(&suggest("  ")).is_ok());
    }
}
