//! Reading typed values out of the spanned TOML tree (`toml::de::DeTable`)
//! while collecting every problem as a located diagnostic instead of
//! stopping at the first. The section-by-section walk lives in `lower.rs`;
//! this file holds the field readers it is built from.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Duration;

use mayfly_core::{ByteSize, Name, NameError, QuantityError, Schedule, ScheduleError, parse_duration};
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use crate::diagnostic::{Diagnostic, SourceFile};
use crate::model::{CidrError, Ipv4Cidr};

pub(crate) type Value<'i> = Spanned<DeValue<'i>>;
pub(crate) type Key<'i> = Spanned<DeString<'i>>;

/// A value with the byte span it came from.
#[derive(Debug, Clone)]
pub(crate) struct Located<T> {
    pub value: T,
    pub span: Range<usize>,
}

/// One TOML table being read, and how messages name it.
pub(crate) struct Table<'t, 'i> {
    pub entries: &'t DeTable<'i>,
    /// The table header or inline table, for "missing key" errors.
    pub span: Range<usize>,
    /// e.g. "queue `to-code`", "`[policy]`", "route #2 `from`".
    pub what: String,
}

impl<'t, 'i> Table<'t, 'i> {
    pub fn get(&self, key: &str) -> Option<(&'t Key<'i>, &'t Value<'i>)> {
        self.entries.get_key_value(key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The span of `key`'s name, or of the table when it is absent.
    pub fn key_span(&self, key: &str) -> Range<usize> {
        self.get(key).map_or(self.span.clone(), |(key, _)| key.span())
    }
}

/// The kinds of declared resources other entries refer to by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ResourceKind {
    Bucket,
    Queue,
    Function,
    Alarm,
}

impl ResourceKind {
    pub fn noun(self) -> &'static str {
        match self {
            ResourceKind::Bucket => "bucket",
            ResourceKind::Queue => "queue",
            ResourceKind::Function => "function",
            ResourceKind::Alarm => "alarm",
        }
    }

    pub fn table_key(self) -> &'static str {
        match self {
            ResourceKind::Bucket => "buckets",
            ResourceKind::Queue => "queues",
            ResourceKind::Function => "functions",
            ResourceKind::Alarm => "alarms",
        }
    }
}

/// A by-name reference, checked once every resource is declared.
pub(crate) struct Reference {
    pub kind: ResourceKind,
    pub name: String,
    pub span: Range<usize>,
    /// Who refers, e.g. "route #1".
    pub subject: String,
    /// What as, e.g. "dead-letter queue".
    pub role: String,
}

/// The diagnostics collected so far, and what is needed to check references.
pub(crate) struct Reader<'s> {
    pub source: SourceFile<'s>,
    pub diagnostics: Vec<Diagnostic>,
    pub references: Vec<Reference>,
    /// Every declared resource key as written (valid name or not), so a bad
    /// name is reported once, not again by each reference to it.
    pub declared: BTreeMap<ResourceKind, BTreeSet<String>>,
}

/// A short description of a TOML value's type for "found …" messages.
pub(crate) fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(text) => format!("the string \"{text}\""),
        DeValue::Integer(integer) => format!("the integer {integer}"),
        DeValue::Float(float) => format!("the float {float}"),
        DeValue::Boolean(boolean) => format!("the boolean {boolean}"),
        DeValue::Datetime(datetime) => format!("the date-time {datetime}"),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

/// The closest of `candidates` to `input` by edit distance, if close enough to be a typo.
/// A key that extends a known one (`batch_size` for `batch`) counts as close too.
pub(crate) fn closest<'c>(input: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let limit = (input.chars().count() / 3).max(1);
    let candidates: Vec<&str> = candidates.into_iter().collect();
    let by_edit_distance = candidates
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(input, candidate), *candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate);
    by_edit_distance.or_else(|| {
        candidates
            .into_iter()
            .filter(|candidate| candidate.len() >= 3 && input.starts_with(candidate))
            .max_by_key(|candidate| candidate.len())
    })
}

const NAME_RULE: &str =
    "names are 1–63 characters: lowercase letters, digits, `-` and `_`, starting with a letter or a digit";

impl<'s> Reader<'s> {
    pub fn new(file_name: &'s str, text: &'s str) -> Reader<'s> {
        Reader {
            source: SourceFile::new(file_name, text),
            diagnostics: Vec::new(),
            references: Vec::new(),
            declared: BTreeMap::new(),
        }
    }

    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>, hint: Option<String>) {
        let diagnostic = self.source.diagnostic(span, message.into(), hint);
        self.diagnostics.push(diagnostic);
    }

    /// An error about a value that holds a secret (a password in a URL):
    /// located like any other, but the source line is shown with the value
    /// masked, so the secret is not repeated on a terminal or in a log.
    pub fn secret_error(&mut self, span: Range<usize>, message: impl Into<String>, hint: Option<String>) {
        const MASK: &str = "<value not shown: it holds a secret>";
        let mut diagnostic = self.source.diagnostic(span, message.into(), hint);
        let byte_at = |snippet: &str, characters: usize| {
            snippet.char_indices().nth(characters).map_or(snippet.len(), |(offset, _)| offset)
        };
        let start = byte_at(&diagnostic.snippet, diagnostic.column - 1);
        let end = byte_at(&diagnostic.snippet, diagnostic.column - 1 + diagnostic.underline_width);
        diagnostic.snippet.replace_range(start..end, MASK);
        diagnostic.underline_width = MASK.chars().count();
        self.diagnostics.push(diagnostic);
    }

    /// Report every key of `table` not in `known`, suggesting the closest known key.
    pub fn check_keys(&mut self, table: &Table<'_, '_>, known: &[&str]) {
        for key in table.entries.keys() {
            let key_text = key.get_ref().as_ref();
            if known.contains(&key_text) {
                continue;
            }
            let hint = match closest(key_text, known.iter().copied()) {
                Some(suggestion) => format!("did you mean `{suggestion}`?"),
                None => format!("known keys here are: {}", known.join(", ")),
            };
            self.error(key.span(), format!("unknown key `{key_text}` in {}", table.what), Some(hint));
        }
    }

    fn wrong_type(
        &mut self,
        table: &Table<'_, '_>,
        key: &str,
        value: &Value<'_>,
        expected: &str,
        hint: Option<String>,
    ) {
        self.error(
            value.span(),
            format!("`{key}` of {} must be {expected}, not {}", table.what, describe(value.get_ref())),
            hint,
        );
    }

    pub fn missing(&mut self, table: &Table<'_, '_>, key: &str, hint: String) {
        self.error(table.span.clone(), format!("{} has no `{key}`", table.what), Some(hint));
    }

    pub fn string(&mut self, table: &Table<'_, '_>, key: &str) -> Option<Located<String>> {
        let (_, value) = table.get(key)?;
        match value.get_ref() {
            DeValue::String(text) => Some(Located { value: text.to_string(), span: value.span() }),
            _ => {
                self.wrong_type(table, key, value, "a string", None);
                None
            }
        }
    }

    /// A string that must not be empty or blank.
    pub fn non_empty_string(&mut self, table: &Table<'_, '_>, key: &str) -> Option<Located<String>> {
        let text = self.string(table, key)?;
        if text.value.trim().is_empty() {
            self.error(
                text.span,
                format!("`{key}` of {} is empty", table.what),
                Some(format!("give `{key}` a value or remove it")),
            );
            return None;
        }
        Some(text)
    }

    pub fn bool(&mut self, table: &Table<'_, '_>, key: &str) -> Option<bool> {
        let (_, value) = table.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(boolean) => Some(*boolean),
            DeValue::String(text) if text == "true" || text == "false" => {
                let hint = format!("drop the quotes: `{key} = {text}`");
                self.wrong_type(table, key, value, "true or false", Some(hint));
                None
            }
            _ => {
                self.wrong_type(table, key, value, "true or false", None);
                None
            }
        }
    }

    /// A whole number in `minimum..=maximum`.
    pub fn integer(&mut self, table: &Table<'_, '_>, key: &str, minimum: u32, maximum: u32) -> Option<Located<u32>> {
        let (_, value) = table.get(key)?;
        let range_text =
            if maximum == u32::MAX { format!("{minimum} or more") } else { format!("from {minimum} to {maximum}") };
        let DeValue::Integer(integer) = value.get_ref() else {
            let hint = match value.get_ref() {
                DeValue::String(text) if text.trim().parse::<i64>().is_ok() => {
                    Some(format!("drop the quotes: `{key} = {}`", text.trim()))
                }
                _ => None,
            };
            self.wrong_type(table, key, value, "a whole number", hint);
            return None;
        };
        let number = i64::from_str_radix(integer.as_str(), integer.radix()).ok();
        match number.and_then(|number| u32::try_from(number).ok()).filter(|number| (minimum..=maximum).contains(number))
        {
            Some(number) => Some(Located { value: number, span: value.span() }),
            None => {
                self.error(
                    value.span(),
                    format!("`{key}` of {} is {integer}, out of range", table.what),
                    Some(format!("`{key}` is a whole number {range_text}")),
                );
                None
            }
        }
    }

    /// A finite number ≥ 0 (integers are accepted too).
    pub fn non_negative_number(&mut self, table: &Table<'_, '_>, key: &str) -> Option<Located<f64>> {
        let (_, value) = table.get(key)?;
        let number = match value.get_ref() {
            DeValue::Float(float) => float.as_str().parse::<f64>().ok(),
            DeValue::Integer(integer) => i64::from_str_radix(integer.as_str(), integer.radix()).ok().map(|n| n as f64),
            _ => {
                let hint = format!("write a number without quotes, e.g. `{key} = 0.5`");
                self.wrong_type(table, key, value, "a number", Some(hint));
                return None;
            }
        };
        match number.filter(|number| number.is_finite() && *number >= 0.0) {
            Some(number) => Some(Located { value: number, span: value.span() }),
            None => {
                self.error(
                    value.span(),
                    format!("`{key}` of {} must be a finite number of 0 or more", table.what),
                    Some(format!("write e.g. `{key} = 0.5`")),
                );
                None
            }
        }
    }

    /// A duration string such as `"30s"`, `"5m"`, `"90d"`.
    pub fn duration(&mut self, table: &Table<'_, '_>, key: &str) -> Option<Duration> {
        let (_, value) = table.get(key)?;
        let DeValue::String(text) = value.get_ref() else {
            let hint = match value.get_ref() {
                DeValue::Integer(integer) => {
                    format!("write the unit too, e.g. `{key} = \"{integer}s\"` for {integer} seconds")
                }
                _ => "write a whole number and a unit: ms, s, m, h or d, e.g. \"30s\" or \"5m\"".to_owned(),
            };
            self.wrong_type(table, key, value, "a duration string such as \"30s\"", Some(hint));
            return None;
        };
        match parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(error) => {
                self.report_quantity_error(value.span(), table, key, &error);
                None
            }
        }
    }

    /// A duration that must be longer than zero (a timeout, a deadline):
    /// `0s` is reported at its place, and gives `None`.
    pub fn positive_duration(&mut self, table: &Table<'_, '_>, key: &str) -> Option<Duration> {
        let duration = self.duration(table, key)?;
        if duration.is_zero() {
            let span = table.get(key).map_or(table.span.clone(), |(_, value)| value.span());
            self.error(
                span,
                format!("`{key}` of {} is zero", table.what),
                Some(format!("give a duration longer than zero, e.g. \"30s\", or remove `{key}` for the default")),
            );
            return None;
        }
        Some(duration)
    }

    /// A size that must be more than zero bytes (a memory limit): `0B` is
    /// reported at its place, and gives `None`.
    pub fn positive_size(&mut self, table: &Table<'_, '_>, key: &str) -> Option<ByteSize> {
        let size = self.size(table, key)?;
        if size.bytes() == 0 {
            let span = table.get(key).map_or(table.span.clone(), |(_, value)| value.span());
            self.error(
                span,
                format!("`{key}` of {} is zero bytes", table.what),
                Some(format!(
                    "nothing runs in zero bytes; give a size such as \"512MiB\", or remove `{key}` for the default"
                )),
            );
            return None;
        }
        Some(size)
    }

    /// A size string such as `"512MiB"`.
    pub fn size(&mut self, table: &Table<'_, '_>, key: &str) -> Option<ByteSize> {
        let (_, value) = table.get(key)?;
        let DeValue::String(text) = value.get_ref() else {
            let hint = "write a whole number and a unit: B, KB, MB, GB, KiB, MiB or GiB, e.g. \"512MiB\"".to_owned();
            self.wrong_type(table, key, value, "a size string such as \"512MiB\"", Some(hint));
            return None;
        };
        match ByteSize::parse(text) {
            Ok(size) => Some(size),
            Err(error) => {
                self.report_quantity_error(value.span(), table, key, &error);
                None
            }
        }
    }

    fn report_quantity_error(&mut self, span: Range<usize>, table: &Table<'_, '_>, key: &str, error: &QuantityError) {
        let (message, hint) = match error {
            QuantityError::BadDuration { input } => (
                format!("`{key}` of {} is not a duration: \"{input}\"", table.what),
                "write a whole number and a unit: ms, s, m, h or d, e.g. \"30s\" or \"5m\"",
            ),
            QuantityError::BadSize { input } => (
                format!("`{key}` of {} is not a size: \"{input}\"", table.what),
                "write a whole number and a unit: B, KB, MB, GB, KiB, MiB or GiB, e.g. \"512MiB\"",
            ),
            QuantityError::Overflow { input } => (
                format!("`{key}` of {} is too large: \"{input}\"", table.what),
                "use a smaller number or a larger unit",
            ),
        };
        self.error(span, message, Some(hint.to_owned()));
    }

    /// One of a fixed set of strings.
    pub fn choice<T: Copy>(&mut self, table: &Table<'_, '_>, key: &str, options: &[(&str, T)]) -> Option<T> {
        let text = self.string(table, key)?;
        if let Some((_, choice)) = options.iter().find(|(option, _)| *option == text.value) {
            return Some(*choice);
        }
        let allowed: Vec<String> = options.iter().map(|(option, _)| format!("\"{option}\"")).collect();
        let hint = match closest(&text.value, options.iter().map(|(option, _)| *option)) {
            Some(suggestion) => format!("did you mean \"{suggestion}\"? `{key}` is one of {}", allowed.join(", ")),
            None => format!("`{key}` is one of {}", allowed.join(", ")),
        };
        self.error(text.span, format!("`{key}` of {} cannot be \"{}\"", table.what, text.value), Some(hint));
        None
    }

    pub fn table<'t, 'i>(&mut self, parent: &Table<'t, 'i>, key: &str, what: String) -> Option<Table<'t, 'i>> {
        let (_, value) = parent.get(key)?;
        self.value_as_table(parent, key, value, what)
    }

    pub fn value_as_table<'t, 'i>(
        &mut self,
        parent: &Table<'_, '_>,
        key: &str,
        value: &'t Value<'i>,
        what: String,
    ) -> Option<Table<'t, 'i>> {
        match value.get_ref() {
            DeValue::Table(entries) => Some(Table { entries, span: value.span(), what }),
            _ => {
                let hint = format!("write a table: `{key} = {{ ... }}` or a `[...]` section");
                self.wrong_type(parent, key, value, "a table", Some(hint));
                None
            }
        }
    }

    pub fn array<'t, 'i>(&mut self, table: &Table<'t, 'i>, key: &str, expected: &str) -> Option<&'t [Value<'i>]> {
        let (_, value) = table.get(key)?;
        match value.get_ref() {
            DeValue::Array(items) => Some(items.as_ref()),
            _ => {
                self.wrong_type(table, key, value, expected, Some(format!("write `{key} = [ ... ]`")));
                None
            }
        }
    }

    pub fn string_list(&mut self, table: &Table<'_, '_>, key: &str) -> Option<Vec<Located<String>>> {
        let items = self.array(table, key, "an array of strings")?;
        let mut strings = Vec::new();
        for item in items {
            match item.get_ref() {
                DeValue::String(text) => strings.push(Located { value: text.to_string(), span: item.span() }),
                other => self.error(
                    item.span(),
                    format!("`{key}` of {} must hold only strings, not {}", table.what, describe(other)),
                    Some("quote each entry, e.g. [\"a\", \"b\"]".to_owned()),
                ),
            }
        }
        Some(strings)
    }

    /// A table of string → string, e.g. `tags` and `env`.
    pub fn string_map(&mut self, table: &Table<'_, '_>, key: &str) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        let Some(entries) = self.table(table, key, format!("`{key}` of {}", table.what)) else {
            return map;
        };
        for (entry_key, entry_value) in entries.entries.iter() {
            let entry_name = entry_key.get_ref().to_string();
            if entry_name.trim().is_empty() {
                self.error(
                    entry_key.span(),
                    format!("{} has an empty key", entries.what),
                    Some("give every entry a name".to_owned()),
                );
                continue;
            }
            match entry_value.get_ref() {
                DeValue::String(text) => {
                    map.insert(entry_name, text.to_string());
                }
                other => {
                    let hint = match other {
                        DeValue::Table(_) => {
                            "a dotted key makes a nested table; quote the key instead, e.g. \"data.class\" = \"phi\""
                                .to_owned()
                        }
                        _ => format!("quote the value, e.g. {entry_name} = \"...\""),
                    };
                    self.error(
                        entry_value.span(),
                        format!("`{entry_name}` in {} must be a string, not {}", entries.what, describe(other)),
                        Some(hint),
                    );
                }
            }
        }
        map
    }

    /// Parse `text` as a resource name, reporting a bad one at `span`.
    pub fn name(&mut self, text: &str, span: Range<usize>, what: &str) -> Option<Name> {
        match Name::new(text) {
            Ok(name) => Some(name),
            Err(error) => {
                let detail = match &error {
                    NameError::Empty => "it is empty".to_owned(),
                    NameError::TooLong { length, .. } => format!("it is {length} characters long; the limit is 63"),
                    NameError::BadStart { .. } => "it must start with a lowercase letter or a digit".to_owned(),
                    NameError::BadCharacter { character, .. } => format!("it contains `{character}`"),
                };
                let hint = match Name::new(text.to_lowercase().replace([' ', '.', '/'], "-")) {
                    Ok(suggestion) if suggestion.as_str() != text => format!("{NAME_RULE}; e.g. `{suggestion}`"),
                    _ => NAME_RULE.to_owned(),
                };
                self.error(span, format!("`{text}` is not a valid {what} name: {detail}"), Some(hint));
                None
            }
        }
    }

    /// A string naming a resource of `kind`, checked against the declarations later.
    pub fn reference(&mut self, table: &Table<'_, '_>, key: &str, kind: ResourceKind, role: &str) -> Option<Name> {
        let text = self.string(table, key)?;
        self.reference_from(text, kind, &table.what, role)
    }

    pub fn reference_from(
        &mut self,
        text: Located<String>,
        kind: ResourceKind,
        subject: &str,
        role: &str,
    ) -> Option<Name> {
        let name = self.name(&text.value, text.span.clone(), kind.noun())?;
        self.references.push(Reference {
            kind,
            name: text.value,
            span: text.span,
            subject: subject.to_owned(),
            role: role.to_owned(),
        });
        Some(name)
    }

    pub fn schedule(&mut self, table: &Table<'_, '_>, key: &str) -> Option<Schedule> {
        let text = self.string(table, key)?;
        match Schedule::parse(&text.value) {
            Ok(schedule) => Some(schedule),
            Err(error) => {
                let (message, hint) = match error {
                    ScheduleError::UnknownForm { input } => (
                        format!("`{key}` of {} is not a schedule: \"{input}\"", table.what),
                        "write `cron(MIN HOUR DAY MONTH WEEKDAY)` or `rate(N seconds|minutes|hours|days)`, e.g. \"cron(0 2 * * *)\" or \"rate(5 minutes)\"",
                    ),
                    ScheduleError::BadCron { expression, reason } => (
                        format!("`{key}` of {} has a bad cron expression `{expression}`: {reason}", table.what),
                        "cron takes five fields: minute hour day-of-month month day-of-week, e.g. \"cron(0 2 * * *)\" for 02:00 UTC daily",
                    ),
                    ScheduleError::BadRate { input } => (
                        format!("`{key}` of {} has a bad rate: \"{input}\"", table.what),
                        "write a positive whole number and second(s), minute(s), hour(s) or day(s), e.g. \"rate(5 minutes)\"",
                    ),
                };
                self.error(text.span, message, Some(hint.to_owned()));
                None
            }
        }
    }

    pub fn cidr(&mut self, text: &Located<String>, what: &str) -> Option<Ipv4Cidr> {
        match text.value.parse::<Ipv4Cidr>() {
            Ok(cidr) => Some(cidr),
            Err(CidrError::Malformed { input }) => {
                self.error(
                    text.span.clone(),
                    format!("\"{input}\" in {what} is not an IPv4 network in CIDR notation"),
                    Some("write an IPv4 address and a prefix length from 0 to 32, e.g. \"10.77.0.0/16\"".to_owned()),
                );
                None
            }
            Err(CidrError::HostBitsSet { input, network }) => {
                self.error(
                    text.span.clone(),
                    format!("\"{input}\" in {what} has host bits set after its prefix"),
                    Some(format!("did you mean \"{network}\"? a network address has only zero bits after its prefix")),
                );
                None
            }
        }
    }

    pub fn declare(&mut self, kind: ResourceKind, raw_name: &str) {
        self.declared.entry(kind).or_default().insert(raw_name.to_owned());
    }

    /// Report every reference to an undeclared resource.
    pub fn check_references(&mut self) {
        let references = std::mem::take(&mut self.references);
        for reference in &references {
            let declared = self.declared.get(&reference.kind).cloned().unwrap_or_default();
            if declared.contains(&reference.name) {
                continue;
            }
            let noun = reference.kind.noun();
            let listing = declared.iter().map(String::as_str).collect::<Vec<_>>().join(", ");
            let hint = if declared.is_empty() {
                format!("no {noun}s are declared; add a `[{}.{}]` table", reference.kind.table_key(), reference.name)
            } else if let Some(suggestion) = closest(&reference.name, declared.iter().map(String::as_str)) {
                format!("did you mean `{suggestion}`? declared {noun}s are: {listing}")
            } else {
                format!(
                    "declared {noun}s are: {listing}; declare `{}` with a `[{}.{}]` table",
                    reference.name,
                    reference.kind.table_key(),
                    reference.name
                )
            };
            self.error(
                reference.span.clone(),
                format!("{} names {} `{}`, which is not declared", reference.subject, reference.role, reference.name),
                Some(hint),
            );
        }
        self.references = references;
    }
}
