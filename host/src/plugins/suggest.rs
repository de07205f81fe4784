//! "Did you mean …?" for a plugin name that is not loaded: the API's
//! `meta.warnings` on an endpoint and `config check` name the nearest
//! plugin that is (a typo such as `slack-notfy` otherwise only shows up
//! later, as deliveries failing with `not_loaded`).

/// The candidate closest to `name`, if it is close enough to be a typo
/// (normalized Damerau-Levenshtein similarity of at least 0.7, or one
/// edit on a short name).
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| {
            let distance = strsim::damerau_levenshtein(name, c);
            let similarity = strsim::normalized_damerau_levenshtein(name, c);
            (c, distance, similarity)
        })
        .filter(|(_, d, s)| *s >= 0.7 || *d <= 1)
        .min_by(|a, b| a.1.cmp(&b.1).then(b.2.total_cmp(&a.2)))
        .map(|(c, _, _)| c)
}

/// The warning for an endpoint that names a plugin not loaded now.
pub fn not_loaded_warning<'a>(name: &str, loaded: impl IntoIterator<Item = &'a str>) -> String {
    let hint = match nearest(name, loaded) {
        Some(n) => format!("; did you mean {n:?}?"),
        None => String::new(),
    };
    format!(
        "plugin {name:?} is not loaded: deliveries through it fail with not_loaded (and are retried) until {name}.wasm is in the plugins folder{hint}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_loaded_name() {
        let loaded = ["event-filter", "slack-notify", "segment"];
        assert_eq!(nearest("slack-notfy", loaded), Some("slack-notify"));
        assert_eq!(nearest("segmnet", loaded), Some("segment"));
        assert_eq!(nearest("event_filter", loaded), Some("event-filter"));
        assert_eq!(nearest("amplitude", loaded), None);
        let w = not_loaded_warning("slack-notfy", loaded);
        assert!(w.ends_with("did you mean \"slack-notify\"?"), "{w}");
        assert!(!not_loaded_warning("zzz", loaded).contains("did you mean"));
    }
}
