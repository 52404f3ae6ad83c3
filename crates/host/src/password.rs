//! Where a PostgreSQL state store's password comes from, never from the
//! architecture file: `MAYFLY_STATE_PASSWORD` or `PGPASSWORD` first, then
//! the owner-only file `[state] password_file` names, then a `.pgpass` file
//! (`PGPASSFILE` or `~/.pgpass`) in libpq's format, which is used only when
//! it is owner-only (libpq's rule: a `.pgpass` readable by others is
//! ignored, with a warning).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Mayfly's own variable for the state store's password.
pub const STATE_PASSWORD_ENV_VAR: &str = "MAYFLY_STATE_PASSWORD";
/// libpq's variable for the password.
pub const PGPASSWORD_ENV_VAR: &str = "PGPASSWORD";
/// libpq's variable naming the password file.
pub const PGPASSFILE_ENV_VAR: &str = "PGPASSFILE";

/// What the password is looked up for (a `.pgpass` line matches on these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordFor {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
}

/// The password from the environment, if one of its variables is set (not empty).
pub fn password_from_environment() -> Option<String> {
    [STATE_PASSWORD_ENV_VAR, PGPASSWORD_ENV_VAR]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
}

/// The password in `path` (its first line), which must be owner-only.
pub fn password_from_file(path: &Path) -> Result<String> {
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("cannot read the state store password file {}", path.display()))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "the state store password file {} can be read by others (mode {mode:o}); make it owner-only: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the state store password file {}", path.display()))?;
    let password = text.lines().next().unwrap_or_default().to_owned();
    if password.is_empty() {
        bail!("the state store password file {} is empty; write the password on its first line", path.display());
    }
    Ok(password)
}

/// The `.pgpass` file libpq would read: `PGPASSFILE`, else `~/.pgpass`.
pub fn pgpass_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(PGPASSFILE_ENV_VAR).filter(|value| !value.is_empty()) {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("HOME").filter(|value| !value.is_empty()).map(|home| PathBuf::from(home).join(".pgpass"))
}

/// The password of the first line of the `.pgpass` file at `path` that
/// matches `wanted`; `None` when there is no such file, no matching line,
/// or the file is readable by others (ignored, with a warning, as libpq does).
pub fn password_from_pgpass(path: &Path, wanted: &PasswordFor) -> Result<Option<String>> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("cannot read the password file {}", path.display())),
    };
    if !metadata.is_file() {
        return Ok(None);
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            "the password file has group or world access and is ignored; permissions should be u=rw (0600) or less"
        );
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the password file {}", path.display()))?;
    Ok(match_pgpass(&text, wanted))
}

/// libpq's `.pgpass` lookup: lines `hostname:port:database:username:password`,
/// `*` matching anything in the first four fields, `\:` and `\\` escaping;
/// `#` lines are comments; the first match wins.
pub fn match_pgpass(text: &str, wanted: &PasswordFor) -> Option<String> {
    let port = wanted.port.to_string();
    let wanted_fields = [wanted.host.as_str(), port.as_str(), wanted.database.as_str(), wanted.user.as_str()];
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass_line(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = fields.iter().zip(wanted_fields).all(|(field, wanted)| field == "*" || field == wanted);
        if matches {
            return Some(fields[4].clone());
        }
    }
    None
}

/// The fields of one `.pgpass` line: split at unescaped `:`, the password
/// being the rest of the line after the fourth.
fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut characters = line.chars();
    while let Some(character) = characters.next() {
        match character {
            '\\' => {
                if let Some(escaped) = characters.next() {
                    fields.last_mut().expect("fields is never empty").push(escaped);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            other => fields.last_mut().expect("fields is never empty").push(other),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn wanted() -> PasswordFor {
        PasswordFor {
            host: "db.example.org".to_owned(),
            port: 5432,
            database: "mayfly".to_owned(),
            user: "pipeline".to_owned(),
        }
    }

    #[test]
    fn the_first_matching_line_wins_with_wildcards_and_escapes() {
        let text = "# a comment\n\
other.example.org:5432:mayfly:pipeline:not-this\n\
db.example.org:5432:mayfly:pipeline:pass\\:with\\\\escapes:and-colons\n\
*:*:*:*:fallback\n";
        assert_eq!(match_pgpass(text, &wanted()).as_deref(), Some("pass:with\\escapes:and-colons"));
        let elsewhere = PasswordFor { host: "x".to_owned(), ..wanted() };
        assert_eq!(match_pgpass(text, &elsewhere).as_deref(), Some("fallback"));
        assert_eq!(match_pgpass("db.example.org:5433:mayfly:pipeline:p\n", &wanted()), None, "another port");
        assert_eq!(match_pgpass("db.example.org:5432:mayfly\n", &wanted()), None, "a short line");
    }

    #[test]
    fn a_pgpass_readable_by_others_is_ignored_and_an_owner_only_one_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "*:*:*:pipeline:secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(password_from_pgpass(&path, &wanted()).unwrap(), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(password_from_pgpass(&path, &wanted()).unwrap().as_deref(), Some("secret"));
        assert_eq!(password_from_pgpass(&dir.path().join("missing"), &wanted()).unwrap(), None);
    }

    #[test]
    fn a_password_file_must_be_owner_only_and_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "secret\nignored\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let error = password_from_file(&path).unwrap_err().to_string();
        assert!(error.contains("can be read by others (mode 640)") && error.contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(password_from_file(&path).unwrap(), "secret");
        std::fs::write(&path, "\n").unwrap();
        assert!(password_from_file(&path).unwrap_err().to_string().contains("is empty"));
    }
}
