//! `hookline sign`, `verify` and `send` as a script would use them.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use hookline_signature::{Keyset, Scheme, VerifyOptions};

use crate::receiver;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn hookline(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hookline");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("hookline finishes")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8 output")
}

fn header_args(signed: &str) -> Vec<String> {
    signed
        .lines()
        .flat_map(|line| ["-H".to_owned(), line.to_owned()])
        .collect()
}

#[test]
fn sign_prints_the_reference_vector() {
    let output = hookline(
        &[
            "sign",
            "--scheme",
            "standard",
            "--secret",
            SECRET,
            "--id",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "--timestamp",
            "1614265330",
        ],
        br#"{"test": 2432232314}"#,
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout(&output),
        "webhook-id: msg_p5jXN8AQM9LWM0D4loKWxJek\n\
         webhook-timestamp: 1614265330\n\
         webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=\n"
    );
}

#[test]
fn every_scheme_round_trips_through_the_cli() {
    let body = "{\"text\":\"h\u{e9}llo \u{2713}\"}".as_bytes();
    for scheme in Scheme::ALL {
        let secret = match scheme {
            Scheme::Standard | Scheme::Svix | Scheme::OpenAi | Scheme::Replicate => SECRET,
            _ => "a plain provider secret",
        };
        let signed = hookline(
            &["sign", "--scheme", scheme.name(), "--secret", secret],
            body,
        );
        assert!(signed.status.success(), "{scheme}: {signed:?}");
        let mut args = vec!["verify", "--scheme", scheme.name(), "--secret", secret];
        let headers = header_args(&stdout(&signed));
        args.extend(headers.iter().map(String::as_str));
        let verified = hookline(&args, body);
        assert_eq!(stdout(&verified), "valid\n", "{scheme}");
        assert_eq!(verified.status.code(), Some(0));

        let tampered = hookline(&args, b"{\"text\":\"hello\"}");
        if scheme == Scheme::HuggingFace {
            // The plain shared secret does not cover the body: only the secret is checked.
            assert_eq!(stdout(&tampered), "valid\n");
        } else {
            assert_eq!(tampered.status.code(), Some(1), "{scheme}");
            assert!(
                stdout(&tampered).starts_with("invalid (no_signature_matched)"),
                "{scheme}"
            );
        }
    }
}

#[test]
fn verify_explains_each_failure_and_exits_1() {
    let body = b"{}";
    let base = [
        "verify",
        "--scheme",
        "standard",
        "--secret",
        SECRET,
        "-H",
        "webhook-id: msg_1",
        "-H",
        "webhook-timestamp: 1700000000",
    ];
    let signed = hookline(
        &[
            "sign",
            "--scheme",
            "standard",
            "--secret",
            SECRET,
            "--id",
            "msg_1",
            "--timestamp",
            "1700000000",
        ],
        body,
    );
    let signature = stdout(&signed)
        .lines()
        .find(|line| line.starts_with("webhook-signature"))
        .expect("signature line")
        .to_owned();

    let cases: [(&[&str], &str); 4] = [
        (
            &["--now", "1700000000"],
            "invalid (missing_header): missing header webhook-signature",
        ),
        (
            &["-H", &signature, "--now", "1700000400"],
            "invalid (timestamp_too_old): timestamp too old: 400 s old, 100 s beyond the 300 s tolerance",
        ),
        (
            &["-H", &signature, "--now", "1699999000"],
            "invalid (timestamp_too_new): timestamp too new: 1000 s in the future, 700 s beyond the 300 s tolerance",
        ),
        (
            &[
                "-H",
                &signature,
                "--now",
                "1700000400",
                "--tolerance",
                "none",
            ],
            "valid",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let output = hookline(&args, body);
        assert_eq!(stdout(&output).trim_end(), expected, "{extra:?}");
        assert_eq!(output.status.code(), Some(i32::from(expected != "valid")));
    }

    let mut wrong_secret = base.to_vec();
    wrong_secret[4] = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    wrong_secret.extend_from_slice(&["-H", &signature, "--now", "1700000000"]);
    let output = hookline(&wrong_secret, body);
    assert!(stdout(&output).starts_with(
        "invalid (no_signature_matched): no signature matched: tried 1 signature(s) against 1 key(s)"
    ));

    let mut malformed_secret = base.to_vec();
    malformed_secret[4] = "whsec_!!!";
    malformed_secret.extend_from_slice(&["-H", &signature]);
    let output = hookline(&malformed_secret, body);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).starts_with("invalid (malformed_secret): malformed secret 0"));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["verify", "--scheme", "nope", "--secret", "x"][..],
        &[
            "verify", "--scheme", "standard", "--secret", SECRET, "-H", "no colon",
        ],
        &[
            "verify",
            "--scheme",
            "standard",
            "--secret",
            SECRET,
            "--tolerance",
            "soon",
        ],
        &["sign", "--scheme", "standard"],
        &["sign", "--scheme", "standard", "--secret", "whsec_short"],
        &[
            "sign",
            "--scheme",
            "standard",
            "--secret",
            SECRET,
            "--body-file",
            "/nonexistent",
        ],
        &["send", "ftp://example.test", "--secret", SECRET],
        &[
            "send",
            "http://127.0.0.1:9",
            "--secret",
            SECRET,
            "--data",
            "{not json",
        ],
    ] {
        let output = hookline(args, b"");
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(!output.stderr.is_empty(), "{args:?} says why");
    }
}

#[test]
fn help_has_an_example_for_every_command() {
    for command in ["sign", "verify", "send"] {
        let output = hookline(&[command, "--help"], b"");
        assert!(output.status.success());
        let text = stdout(&output);
        assert!(text.contains("Examples:"), "{command}");
        assert!(text.contains(&format!("hookline {command} ")), "{command}");
    }
}

#[test]
fn send_posts_a_signed_event_payload() {
    let (addr, requests) = receiver::spawn(vec![(202, "x-answer: yes\r\n")]);
    let url = format!("http://{addr}/hooks/in?x=1");
    let output = hookline(
        &[
            "send",
            &url,
            "--secret",
            SECRET,
            "--event-type",
            "job.succeeded",
            "--data",
            r#"{"job":"job_1"}"#,
            "-H",
            "x-tenant: t1",
        ],
        b"",
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains("202 Accepted"), "{text}");
    assert!(text.contains("x-answer: yes"), "{text}");

    let request = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("request arrived");
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hooks/in?x=1");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-tenant"), Some("t1"));
    let payload: serde_json::Value = serde_json::from_slice(&request.body).expect("json body");
    assert_eq!(payload["type"], "job.succeeded");
    assert_eq!(payload["data"]["job"], "job_1");
    assert!(
        payload["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let keys = Keyset::new(Scheme::Standard, [SECRET]).unwrap();
    let verified = keys
        .verify(&request.headers, &request.body, VerifyOptions::default())
        .expect("receiver verifies the signature");
    assert!(verified.id.is_some_and(|id| id.starts_with("msg_")));
}

#[test]
fn send_reports_failures_and_never_follows_redirects() {
    let (addr, requests) = receiver::spawn(vec![
        (307, "location: http://127.0.0.1:9/elsewhere\r\n"),
        (500, ""),
    ]);
    let body_file = std::env::temp_dir().join(format!("hookline-send-{}.json", std::process::id()));
    std::fs::write(&body_file, b"{\"raw\":true}").unwrap();
    for expected in ["307 Temporary Redirect", "500 Internal Server Error"] {
        let output = hookline(
            &[
                "send",
                &format!("http://{addr}/"),
                "--scheme",
                "github",
                "--secret",
                "gh secret",
                "--body-file",
                body_file.to_str().unwrap(),
            ],
            b"",
        );
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert!(stdout(&output).contains(expected));
        let request = requests.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(request.body, b"{\"raw\":true}");
        assert!(request.header("x-hub-signature-256").is_some());
    }
    // Only the two scripted requests arrived: the redirect was not followed.
    assert!(requests.recv_timeout(Duration::from_millis(200)).is_err());

    let refused = hookline(&["send", "http://127.0.0.1:9/", "--secret", SECRET], b"");
    assert_eq!(refused.status.code(), Some(1));
    assert!(stdout(&refused).starts_with("no answer: connection failed"));
    std::fs::remove_file(body_file).ok();
}
