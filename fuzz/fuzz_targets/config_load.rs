//! The config loader (`config::load`: the layers merged by figment, then `validate`) on
//! arbitrary text. No input panics (errors are the expected outcome), and a config that
//! loads renders, as `iorelay check-config` prints it, to a TOML text that reads back to
//! the same config (when it has no secret, which the rendering redacts).
//!
//! The input is split at NUL bytes (never valid anywhere in TOML) into the config file,
//! the profile file beside it (`development.toml`) and `IORELAY_*` variables, one
//! `NAME=VALUE` a line with the prefix left out (`SERVER__WORKERS=4`, `ENV=test`).
//! The files are written to a directory of this process's own, so that the real loader
//! reads them the way the daemon does.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use iorelay_fuzz::config::{self, Config, LoadOptions, validate};
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("iorelay-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let file_text = parts.next().unwrap_or_default();
    let profile_text = parts.next();
    let vars: Vec<(String, String)> = parts
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (format!("IORELAY_{name}"), value.to_owned()))
        .collect();

    let file = dir().join("iorelay.toml");
    let profile = dir().join("development.toml");
    std::fs::write(&file, file_text).expect("the config file is written");
    match profile_text {
        Some(t) => std::fs::write(&profile, t).expect("the profile file is written"),
        None => {
            let _ = std::fs::remove_file(&profile);
        }
    }
    let opts = LoadOptions {
        file: Some(file),
        env_name: None,
        vars,
        search: Vec::new(),
    };
    let Ok(loaded) = config::load(&opts) else {
        return;
    };
    let rendered = validate::render(&loaded.config);
    if !rendered.contains(validate::REDACTED) {
        let back: Config = toml::from_str(&rendered)
            .unwrap_or_else(|e| panic!("the rendering does not read back: {e}\n{rendered}"));
        assert_eq!(back, loaded.config, "{rendered}");
    }
});
