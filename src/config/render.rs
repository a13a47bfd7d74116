//! The effective config as `iorelay check-config` prints it: TOML in the order of the
//! config tree, secrets redacted.

use super::Config;

/// Dotted keys whose values are secrets, which [`render`] prints as [`REDACTED`]. A `*`
/// matches any one key (a namespace name, say). Add the key here in the same change that
/// adds a secret to the config tree (a JWT key, a Redis password, the API token); the
/// `redaction_*` tests check that the walk finds nested keys.
pub const SECRET_KEYS: &[&str] = &[
    "api.tokens",
    "namespaces.*.auth.jwt.secret",
    "webhooks.secret",
];

/// What [`render`] prints in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// The effective config as TOML, for `iorelay check-config`: every key with its value,
/// in the order of the config tree, secrets replaced by [`REDACTED`]. Without secrets the
/// text reads back to the same [`Config`].
pub fn render(c: &Config) -> String {
    let mut table = toml::Table::try_from(c).expect("the config tree serializes to a TOML table");
    let mut redacted_any = false;
    for key in SECRET_KEYS {
        redacted_any |= redact(&mut table, &key.split('.').collect::<Vec<_>>());
    }
    // The Redis URL stays readable (which server) with its password hidden.
    if let Some(toml::Value::String(url)) = table
        .get_mut("cluster")
        .and_then(|c| c.as_table_mut())
        .and_then(|c| c.get_mut("url"))
    {
        let masked = super::cluster::masked_url(url, REDACTED);
        if masked != *url {
            *url = masked;
            redacted_any = true;
        }
    }
    // Printing the struct keeps the tree's key order (a table prints sorted); the
    // redacted table goes back through the struct for that, as secrets are strings.
    let ordered = if redacted_any {
        table.clone().try_into::<Config>().ok()
    } else {
        Some(c.clone())
    };
    match ordered {
        Some(config) => toml::to_string(&config),
        None => toml::to_string(&table),
    }
    .expect("a TOML table prints as TOML")
}

/// Replaces every value at `path` (with `*` segments) by [`REDACTED`]; true if any was.
pub(super) fn redact(table: &mut toml::Table, path: &[&str]) -> bool {
    match path {
        [] => false,
        [last] => {
            let mut hit = false;
            for (k, v) in table.iter_mut() {
                if *last != "*" && k != last {
                    continue;
                }
                match v {
                    // A list of secrets stays a list, so that the text still reads back.
                    toml::Value::Array(items) => {
                        for item in items.iter_mut() {
                            *item = toml::Value::String(REDACTED.to_owned());
                            hit = true;
                        }
                    }
                    // An empty secret (a key that is off) hides nothing and reads back.
                    toml::Value::String(s) if s.is_empty() => {}
                    _ => {
                        *v = toml::Value::String(REDACTED.to_owned());
                        hit = true;
                    }
                }
            }
            hit
        }
        [first, rest @ ..] => {
            let mut hit = false;
            for (k, v) in table.iter_mut() {
                if *first == "*" || k == first {
                    if let toml::Value::Table(inner) = v {
                        hit |= redact(inner, rest);
                    }
                }
            }
            hit
        }
    }
}
