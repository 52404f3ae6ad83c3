//! Located diagnostics for the architecture file: where (`file:line:col`),
//! what, the offending source line with an underline, and what to do.
//! Rendered as plain text in the style of rustc, and serializable for
//! `mayfly validate --json`.

use std::fmt;
use std::ops::Range;

use serde::Serialize;

/// One problem in the architecture file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file name as given to [`crate::parse`], e.g. `mayfly.toml`.
    pub file: String,
    /// 1-based line of the start of the offending span.
    pub line: usize,
    /// 1-based column, counted in characters (not bytes), of the start of the span.
    pub column: usize,
    /// What is wrong, as one sentence.
    pub message: String,
    /// The source line holding the start of the span, without its line ending.
    pub snippet: String,
    /// How many characters of `snippet`, from `column` on, the span covers (at least 1).
    pub underline_width: usize,
    /// What to do about it.
    pub hint: Option<String>,
    /// The span as byte offsets into the source.
    pub span: Range<usize>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line_number = self.line.to_string();
        let gutter = " ".repeat(line_number.len());
        // Keep tabs as tabs so the carets line up under the snippet.
        let caret_indent: String = self
            .snippet
            .chars()
            .take(self.column.saturating_sub(1))
            .map(|character| if character == '\t' { '\t' } else { ' ' })
            .collect();
        let carets = "^".repeat(self.underline_width.max(1));
        writeln!(f, "error: {}", self.message)?;
        writeln!(f, "{gutter}--> {}:{}:{}", self.file, self.line, self.column)?;
        writeln!(f, "{gutter} |")?;
        writeln!(f, "{}", format!("{line_number} | {}", self.snippet).trim_end())?;
        write!(f, "{gutter} | {caret_indent}{carets}")?;
        if let Some(hint) = &self.hint {
            write!(f, "\n{gutter} = hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in one architecture file, in source order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostics {
    pub diagnostics: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn len(&self) -> usize {
        self.diagnostics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.diagnostics {
            writeln!(f, "{diagnostic}")?;
            writeln!(f)?;
        }
        let file = self.diagnostics.first().map_or("the architecture file", |first| first.file.as_str());
        match self.diagnostics.len() {
            1 => write!(f, "error: {file} has 1 error"),
            count => write!(f, "error: {file} has {count} errors"),
        }
    }
}

impl std::error::Error for Diagnostics {}

/// The source text with a line index, to turn byte spans into lines and columns.
pub(crate) struct SourceFile<'s> {
    pub file_name: &'s str,
    pub text: &'s str,
    line_starts: Vec<usize>,
}

impl<'s> SourceFile<'s> {
    pub fn new(file_name: &'s str, text: &'s str) -> SourceFile<'s> {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(offset, _)| offset + 1)).collect();
        SourceFile { file_name, text, line_starts }
    }

    /// Build a diagnostic for the byte span `span` (clamped into the text).
    pub fn diagnostic(&self, span: Range<usize>, message: String, hint: Option<String>) -> Diagnostic {
        let start = self.text.floor_char_boundary(span.start.min(self.text.len()));
        let end = self.text.floor_char_boundary(span.end.clamp(start, self.text.len()));
        // The index of the last line starting at or before `start`; line_starts[0] == 0.
        let line_index = self.line_starts.partition_point(|&line_start| line_start <= start).saturating_sub(1);
        let line_start = self.line_starts.get(line_index).copied().unwrap_or(0);
        let line_end = self.text[line_start..].find('\n').map_or(self.text.len(), |offset| line_start + offset);
        let snippet = self.text[line_start..line_end].trim_end_matches('\r').to_owned();
        let column = self.text[line_start..start].chars().count() + 1;
        let underline_end = end.min(line_end);
        let underline_width = self.text[start..underline_end.max(start)].trim_end_matches('\r').chars().count().max(1);
        Diagnostic {
            file: self.file_name.to_owned(),
            line: line_index + 1,
            column,
            message,
            snippet,
            underline_width,
            hint,
            span: start..end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_characters_not_bytes() {
        let source = SourceFile::new("m.toml", "a = 1\ntags = { \"é\" = \"ü\", x = 2 }\n");
        let offset = source.text.find("x =").unwrap();
        let diagnostic = source.diagnostic(offset..offset + 1, "bad".into(), None);
        assert_eq!((diagnostic.line, diagnostic.column), (2, 21)); // byte offset would give 23
        assert_eq!(diagnostic.snippet, "tags = { \"é\" = \"ü\", x = 2 }");
    }

    #[test]
    fn renders_like_rustc() {
        let text = "\n".repeat(11) + "dead_letter = \"to-code-dql\"\n";
        let source = SourceFile::new("mayfly.toml", &text);
        let start = text.find('"').unwrap();
        let diagnostic = source.diagnostic(
            start..start + 13,
            "queue `to-code` names dead-letter queue `to-code-dql`, which is not declared".into(),
            Some("declared queues are: to-code, to-code-dlq".into()),
        );
        let expected = "\
error: queue `to-code` names dead-letter queue `to-code-dql`, which is not declared
  --> mayfly.toml:12:15
   |
12 | dead_letter = \"to-code-dql\"
   |               ^^^^^^^^^^^^^
   = hint: declared queues are: to-code, to-code-dlq";
        assert_eq!(diagnostic.to_string(), expected);
    }

    #[test]
    fn empty_span_at_end_of_text_gets_one_caret() {
        let source = SourceFile::new("m.toml", "a = ");
        let diagnostic = source.diagnostic(4..4, "missing value".into(), None);
        assert_eq!((diagnostic.line, diagnostic.column, diagnostic.underline_width), (1, 5, 1));
        let diagnostic = source.diagnostic(400..900, "out of range".into(), None);
        assert_eq!((diagnostic.line, diagnostic.column), (1, 5));
    }
}
