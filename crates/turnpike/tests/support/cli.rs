//! One run of the `turnpike` binary for a command that exits by itself (the
//! command line, the admin commands): exactly the environment given (so a
//! developer's `RUST_LOG` or `TURNPIKE_*` cannot change the outcome), a time
//! limit, and the exit status and both outputs.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for one run; these commands finish in milliseconds, so
/// hitting it means a hang (e.g. `serve` unexpectedly starting).
pub const TIME_LIMIT: Duration = Duration::from_secs(30);

/// How a run ended.
pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts exit 0 and no error on stderr, and returns stdout's lines.
    pub fn ok_lines(&self) -> Vec<&str> {
        assert_eq!(self.status, 0, "stderr: {}", self.stderr);
        assert!(!self.stderr.contains("error"), "{}", self.stderr);
        self.stdout.lines().collect()
    }

    /// Asserts that stderr is exactly one `turnpike: error: …` line (and no
    /// panic), and returns that line.
    pub fn single_error_line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "stderr should be one line: {:?}",
            self.stderr
        );
        assert!(
            lines[0].starts_with("turnpike: error: "),
            "{:?}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{:?}", self.stderr);
        lines[0]
    }

    /// [`Output::single_error_line`], after asserting the exit status, and
    /// with nothing on stdout.
    pub fn error_line(&self, status: i32) -> &str {
        assert_eq!(
            self.status, status,
            "stdout {:?} stderr {:?}",
            self.stdout, self.stderr
        );
        let line = self.single_error_line();
        assert_eq!(self.stdout, "", "nothing on stdout after an error");
        line
    }
}

/// Runs the binary with `args`, exactly the environment `env`, and no
/// standard input.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    spawn(args, env, None)
}

/// Runs the binary with `args`, exactly the environment `env`, and `stdin`
/// as its standard input.
pub fn run_with_input(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    spawn(args, env, Some(stdin))
}

fn spawn(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_turnpike"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn turnpike");
    if let Some(stdin) = stdin {
        let mut input = child.stdin.take().unwrap();
        // The binary may exit without reading (a usage error): ignore EPIPE.
        let _ = input.write_all(stdin.as_bytes());
    }
    // Outputs are tiny (well under a pipe buffer), so waiting before reading
    // cannot deadlock.
    let deadline = Instant::now() + TIME_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("turnpike {args:?} did not exit within {TIME_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Output {
        status: status.code().expect("exited normally, not by a signal"),
        stdout,
        stderr,
    }
}
