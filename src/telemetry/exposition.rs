//! Merging Prometheus text expositions: a multi-worker daemon answers `/metrics` with one
//! exposition made of the master's and every worker's. The same series are added up
//! (counters and most gauges are per process), except `iorelay_rooms`, which every
//! worker already reports host-wide (the largest is kept); the workers' own `process_*`
//! series and build info are left out (the master's stand for the daemon). Families keep
//! the order in which they first appear, each with its `# HELP`/`# TYPE` lines once.

use std::collections::HashMap;

/// The family whose samples are host-wide in every exposition: merged by maximum.
const HOST_WIDE: &str = "iorelay_rooms";

/// Merge `texts`, the first being the master's (see the module doc).
pub fn merge(texts: &[String]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut meta: HashMap<String, Vec<String>> = HashMap::new();
    let mut series: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    for (i, text) in texts.iter().enumerate() {
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            let family = family_of(line);
            if i > 0 && (family.starts_with("process_") || family == "iorelay_build_info") {
                continue;
            }
            if !meta.contains_key(family) {
                order.push(family.to_owned());
                meta.insert(family.to_owned(), Vec::new());
            }
            if line.starts_with('#') {
                let lines = meta.get_mut(family).expect("inserted above");
                if !lines.iter().any(|l| l == line) {
                    lines.push(line.to_owned());
                }
                continue;
            }
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let samples = series.entry(family.to_owned()).or_default();
            match samples.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) if family == HOST_WIDE => *v = v.max(value),
                Some((_, v)) => *v += value,
                None => samples.push((key.to_owned(), value)),
            }
        }
    }
    let mut out = String::new();
    for family in order {
        for line in &meta[&family] {
            out.push_str(line);
            out.push('\n');
        }
        for (key, value) in series.get(&family).into_iter().flatten() {
            out.push_str(&format!("{key} {value}\n"));
        }
    }
    out
}

/// The metric family a line belongs to (`# HELP name …`, `name{…} v`, `name v`).
fn family_of(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix("# ") {
        rest.split_whitespace().nth(1).unwrap_or("")
    } else {
        line.split(['{', ' ']).next().unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_of_every_line_kind() {
        assert_eq!(family_of("# HELP iorelay_x Things."), "iorelay_x");
        assert_eq!(family_of("# TYPE iorelay_x counter"), "iorelay_x");
        assert_eq!(family_of("iorelay_x{a=\"b c\"} 3"), "iorelay_x");
        assert_eq!(family_of("iorelay_y 4"), "iorelay_y");
    }

    #[test]
    fn sums_per_process_series_and_keeps_the_largest_host_wide_one() {
        let master = "# HELP iorelay_worker_restarts_total Restarts.\n\
                      # TYPE iorelay_worker_restarts_total counter\n\
                      iorelay_worker_restarts_total 1\n\
                      process_open_fds 10\n\
                      iorelay_build_info{version=\"1\"} 1\n";
        let worker = |sessions: u32, rooms: u32| {
            format!(
                "# HELP iorelay_sessions Open sessions.\n\
                 # TYPE iorelay_sessions gauge\n\
                 iorelay_sessions{{transport=\"polling\"}} {sessions}\n\
                 iorelay_sessions{{transport=\"websocket\"}} 1\n\
                 # HELP iorelay_rooms Rooms.\n\
                 # TYPE iorelay_rooms gauge\n\
                 iorelay_rooms{{namespace=\"/\"}} {rooms}\n\
                 process_open_fds 99\n\
                 iorelay_build_info{{version=\"1\"}} 1\n"
            )
        };
        let merged = merge(&[master.to_owned(), worker(2, 3), worker(5, 4)]);
        assert_eq!(
            merged,
            "# HELP iorelay_worker_restarts_total Restarts.\n\
             # TYPE iorelay_worker_restarts_total counter\n\
             iorelay_worker_restarts_total 1\n\
             process_open_fds 10\n\
             iorelay_build_info{version=\"1\"} 1\n\
             # HELP iorelay_sessions Open sessions.\n\
             # TYPE iorelay_sessions gauge\n\
             iorelay_sessions{transport=\"polling\"} 7\n\
             iorelay_sessions{transport=\"websocket\"} 2\n\
             # HELP iorelay_rooms Rooms.\n\
             # TYPE iorelay_rooms gauge\n\
             iorelay_rooms{namespace=\"/\"} 4\n"
        );
    }

    #[test]
    fn skips_what_is_not_a_sample() {
        let merged = merge(&[
            "\nx_total 1\nbroken\nx_total two\n".to_owned(),
            "x_total 2.5\n".to_owned(),
        ]);
        assert_eq!(merged, "x_total 3.5\n");
    }
}
