//! Whether a stream may carry ANSI escapes: colours in logs and help, the
//! redrawn progress bar of `mayfly run`. Every escape the CLI prints is
//! decided here: only on a terminal, and never when `NO_COLOR` is set to a
//! non-empty value (<https://no-color.org>). A file, a pipe or a log
//! collector gets plain text.

use std::io::IsTerminal as _;

/// The two streams the CLI prints on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Whether ANSI escapes may go out on `stream` now.
pub fn escapes_allowed(stream: Stream) -> bool {
    let is_terminal = match stream {
        Stream::Stdout => std::io::stdout().is_terminal(),
        Stream::Stderr => std::io::stderr().is_terminal(),
    };
    is_terminal && !no_color_requested()
}

/// `NO_COLOR` is set to something (an empty value does not count, as the convention says).
pub fn no_color_requested() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty())
}

/// How clap colours help and usage errors: never when escapes are not
/// allowed on the stream it writes them to (help on stdout, errors on
/// stderr), otherwise as clap decides for a terminal.
pub fn clap_colours() -> clap::ColorChoice {
    if escapes_allowed(Stream::Stdout) || escapes_allowed(Stream::Stderr) {
        clap::ColorChoice::Auto
    } else {
        clap::ColorChoice::Never
    }
}
