use std::time::Duration;

use super::*;

fn one(text: &str) -> Instruction {
    let df = parse(&format!("FROM scratch\n{text}")).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert_eq!(df.stages[0].instructions.len(), 1, "{text:?}");
    df.stages[0].instructions[0].clone()
}

fn cmd(text: &str) -> Command {
    one(text).command
}

fn err(text: &str) -> ParseError {
    parse(text).expect_err(text)
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn stages_lines_and_originals() {
    let df = parse(
        "# syntax=docker/dockerfile:1\nARG BASE=debian\n\nFROM ${BASE} AS Build\nRUN make \\\n    all\n\nFROM --platform=$BUILDPLATFORM busybox\nCOPY --from=build /out /out\n",
    )
    .unwrap();
    assert_eq!(df.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(df.global_args.len(), 1);
    assert_eq!(df.global_args[0].line, 2);
    assert_eq!(df.stages.len(), 2);
    let b = &df.stages[0];
    assert_eq!(b.name.as_deref(), Some("build"));
    assert_eq!(b.base(), "${BASE}");
    assert_eq!(b.from.line, 4);
    assert_eq!(b.instructions[0].line, 5);
    assert_eq!(b.instructions[0].end_line, 6);
    assert_eq!(b.instructions[0].original, "RUN make     all");
    assert_eq!(df.stages[1].platform(), Some("$BUILDPLATFORM"));
    assert_eq!(df.stages[1].display_name(), "stage-1");
    assert_eq!(df.stages[1].instructions[0].line, 9);
}

#[test]
fn directives_rules() {
    // Case-insensitive, whitespace tolerant.
    let df = parse("#  ESCAPE = `\nFROM scratch\nRUN a `\n  b\n").unwrap();
    assert_eq!(df.directives.escape, '`');
    assert_eq!(df.stages[0].instructions[0].original, "RUN a   b");
    // After a comment, an empty line or an instruction they are comments.
    for text in [
        "# hello\n# escape=`\nFROM scratch\nRUN a `\n",
        "\n# escape=`\nFROM scratch\nRUN a `\n",
        "FROM scratch\n# escape=`\nRUN a `\n",
        "# unknowndirective=1\n# escape=`\nFROM scratch\nRUN a `\n",
    ] {
        let df = parse(text).unwrap();
        assert_eq!(df.directives.escape, '\\', "{text:?}");
    }
    // Both known directives together.
    let df = parse("# syntax=x\n# escape=\\\nFROM scratch\n").unwrap();
    assert_eq!(df.directives.syntax.as_deref(), Some("x"));
    assert_eq!(
        err("# escape=`\n# escape=\\\nFROM scratch\n").to_string(),
        "dockerfile parse error on line 2: only one escape parser directive can be used"
    );
    assert_eq!(
        err("# escape=x\nFROM scratch\n").to_string(),
        "dockerfile parse error on line 1: invalid escape token 'x' does not match ` or \\"
    );
}

#[test]
fn comments_and_continuations() {
    let df = parse(
        "FROM scratch\n  # indented comment\nRUN echo a \\\n# comment inside\n    b \\\n\n   c\nRUN one \\\\\nRUN two\n",
    )
    .unwrap();
    let ins = &df.stages[0].instructions;
    assert_eq!(ins[0].original, "RUN echo a     b    c");
    assert_eq!((ins[0].line, ins[0].end_line), (3, 7));
    assert_eq!(df.warnings.len(), 1);
    assert!(
        df.warnings[0]
            .message
            .starts_with("Empty continuation line")
    );
    // `\\` at the end is an escaped escape, not a continuation.
    assert_eq!(ins[1].original, "RUN one \\\\");
    assert_eq!(ins[2].line, 9);
    // A continuation at end of file just ends the instruction.
    assert_eq!(one("RUN tail \\").original, "RUN tail ");
    // CRLF line endings.
    let df = parse("FROM scratch\r\nRUN a \\\r\n b\r\n").unwrap();
    assert_eq!(df.stages[0].instructions[0].original, "RUN a  b");
}

#[test]
fn run_forms_and_flags() {
    assert_eq!(
        cmd("RUN echo $HOME"),
        Command::Run(Run {
            command: CommandLine::Shell("echo $HOME".into()),
            heredocs: vec![],
            mounts: vec![],
            network: None,
            security: None,
            devices: vec![],
        })
    );
    let Command::Run(r) = cmd("RUN [\"/bin/echo\", \"a b\"]") else {
        panic!()
    };
    assert_eq!(r.command, CommandLine::Exec(s(&["/bin/echo", "a b"])));
    // Not JSON after all: Docker falls back to the shell form.
    let Command::Run(r) = cmd("RUN [ -f x ] && echo y") else {
        panic!()
    };
    assert_eq!(r.command, CommandLine::Shell("[ -f x ] && echo y".into()));
    let Command::Run(r) = cmd(
        "RUN --mount=type=cache,target=/var/cache/apt --network=none --security=insecure apt-get update",
    ) else {
        panic!()
    };
    assert_eq!(r.mounts.len(), 1);
    assert_eq!(r.mounts[0].kind, MountKind::Cache);
    assert_eq!(r.network, Some(NetworkMode::None));
    assert_eq!(r.security, Some(SecurityMode::Insecure));
    assert_eq!(r.command, CommandLine::Shell("apt-get update".into()));
}

#[test]
fn cmd_entrypoint_shell() {
    assert_eq!(
        cmd("CMD [\"sh\"]"),
        Command::Cmd(CommandLine::Exec(s(&["sh"])))
    );
    assert_eq!(
        cmd("CMD echo hi"),
        Command::Cmd(CommandLine::Shell("echo hi".into()))
    );
    assert_eq!(
        cmd("ENTRYPOINT []"),
        Command::Entrypoint(CommandLine::Exec(vec![]))
    );
    assert_eq!(
        cmd("ENTRYPOINT [\"a\"] trailing"),
        Command::Entrypoint(CommandLine::Exec(s(&["a"])))
    );
    assert_eq!(
        cmd("SHELL [\"/bin/bash\", \"-c\"]"),
        Command::Shell(s(&["/bin/bash", "-c"]))
    );
    assert_eq!(
        cmd("cmd [\"lower\"]"),
        Command::Cmd(CommandLine::Exec(s(&["lower"])))
    );
}

#[test]
fn env_label_forms() {
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: v.into(),
    };
    assert_eq!(
        cmd("ENV A=1 B=\"two words\" C=x\\ y"),
        Command::Env(vec![
            kv("A", "1"),
            kv("B", "\"two words\""),
            kv("C", "x\\ y")
        ])
    );
    assert_eq!(
        cmd("ENV GREETING hello  big world"),
        Command::Env(vec![kv("GREETING", "hello  big world")])
    );
    assert_eq!(cmd("ENV EMPTY="), Command::Env(vec![kv("EMPTY", "")]));
    assert_eq!(
        cmd("LABEL \"com.example.vendor\"=\"ACME Inc\" version=1.0"),
        Command::Label(vec![
            kv("\"com.example.vendor\"", "\"ACME Inc\""),
            kv("version", "1.0")
        ])
    );
    assert_eq!(
        cmd("LABEL multi.word this is legacy"),
        Command::Label(vec![kv("multi.word", "this is legacy")])
    );
}

#[test]
fn expose_volume_arg_misc() {
    assert_eq!(
        cmd("EXPOSE 80 443/tcp 8000-8010/udp"),
        Command::Expose(s(&["80", "443/tcp", "8000-8010/udp"]))
    );
    assert_eq!(cmd("VOLUME /a /b"), Command::Volume(s(&["/a", "/b"])));
    assert_eq!(
        cmd("VOLUME [\"/data\", \"/logs\"]"),
        Command::Volume(s(&["/data", "/logs"]))
    );
    assert_eq!(
        cmd("ARG A B=2 C=\"x y\""),
        Command::Arg(vec![
            ArgDecl {
                name: "A".into(),
                default: None
            },
            ArgDecl {
                name: "B".into(),
                default: Some("2".into())
            },
            ArgDecl {
                name: "C".into(),
                default: Some("\"x y\"".into())
            },
        ])
    );
    assert_eq!(cmd("WORKDIR /my dir"), Command::Workdir("/my dir".into()));
    assert_eq!(cmd("USER app:app"), Command::User("app:app".into()));
    assert_eq!(
        cmd("STOPSIGNAL SIGTERM"),
        Command::StopSignal("SIGTERM".into())
    );
    assert_eq!(
        cmd("MAINTAINER Jane <j@x>"),
        Command::Maintainer("Jane <j@x>".into())
    );
}

#[test]
fn copy_add_forms() {
    let Command::Copy(c) = cmd("COPY --from=build --chown=1:2 --chmod=0755 --link a b* /dest/")
    else {
        panic!()
    };
    assert_eq!(c.paths().collect::<Vec<_>>(), ["a", "b*"]);
    assert_eq!(c.dest, "/dest/");
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.chown.as_deref(), Some("1:2"));
    assert_eq!(c.chmod.as_deref(), Some("0755"));
    assert!(c.link);
    assert!(!c.json);
    let Command::Copy(c) = cmd("COPY [\"with space\", \"/d st/\"]") else {
        panic!()
    };
    assert!(c.json);
    assert_eq!(c.paths().collect::<Vec<_>>(), ["with space"]);
    assert_eq!(c.dest, "/d st/");
    let Command::Add(a) = cmd("ADD --checksum=sha256:abc --keep-git-dir=true https://x/y.tar.gz /")
    else {
        panic!()
    };
    assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
    assert_eq!(a.keep_git_dir, Some(true));
    assert_eq!(
        err("FROM scratch\nADD --from=x a b\n").to_string(),
        "dockerfile parse error on line 2: unknown flag: from"
    );
    assert_eq!(
        err("FROM scratch\nCOPY --parents a/b /c/\n")
            .kind
            .to_string(),
        "COPY --parents is not supported"
    );
}

#[test]
fn heredocs() {
    let df = parse(
        "FROM scratch\nRUN <<EOF\necho $HOME\necho two\nEOF\nRUN <<-\"END\" cat > /x\n\tindented $NOT\n\tEND\nCOPY <<one <<two /dest/\nfirst\none\nsecond\ntwo\nRUN echo done\n",
    )
    .unwrap();
    let ins = &df.stages[0].instructions;
    let Command::Run(r) = &ins[0].command else {
        panic!()
    };
    assert_eq!(r.heredocs.len(), 1);
    assert_eq!(r.heredocs[0].name, "EOF");
    assert_eq!(r.heredocs[0].content, "echo $HOME\necho two\n");
    assert!(r.heredocs[0].expand);
    assert_eq!((ins[0].line, ins[0].end_line), (2, 5));
    assert_eq!(
        r.script(),
        RunScript::Script("echo $HOME\necho two\n".into())
    );
    let Command::Run(r) = &ins[1].command else {
        panic!()
    };
    assert_eq!(r.heredocs[0].content, "indented $NOT\n");
    assert!(!r.heredocs[0].expand);
    assert!(r.heredocs[0].chomp);
    assert_eq!(
        r.script(),
        RunScript::Compound("<<-\"END\" cat > /x\nindented $NOT\nEND".into())
    );
    let Command::Copy(c) = &ins[2].command else {
        panic!()
    };
    assert_eq!(c.sources.len(), 2);
    let CopySource::Heredoc(h) = &c.sources[1] else {
        panic!()
    };
    assert_eq!((h.name.as_str(), h.content.as_str()), ("two", "second\n"));
    assert_eq!(ins[3].line, 14);
    assert_eq!(
        ins[2].source_text(),
        "COPY <<one <<two /dest/\nfirst\none\nsecond\ntwo"
    );
    // Shebang bodies become executables.
    let Command::Run(r) = cmd("RUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF") else {
        panic!()
    };
    assert_eq!(
        r.script(),
        RunScript::Executable("#!/usr/bin/env python3\nprint(1)\n".into())
    );
    // `2<<EOF` keeps its descriptor; JSON forms never have heredocs.
    let Command::Run(r) = cmd("RUN cat 3<<EOF\nx\nEOF") else {
        panic!()
    };
    assert_eq!(r.heredocs[0].fd, Some(3));
    let Command::Run(r) = cmd("RUN [\"echo\", \"<<EOF\"]") else {
        panic!()
    };
    assert!(r.heredocs.is_empty());
    // ONBUILD carries heredocs into its expression.
    let Command::Onbuild(o) = cmd("ONBUILD RUN <<EOF\necho hi\nEOF") else {
        panic!()
    };
    assert_eq!(o.expression, "RUN <<EOF\necho hi\nEOF");
    assert_eq!(o.instruction.command.heredocs().len(), 1);
}

#[test]
fn healthcheck_forms() {
    assert_eq!(
        cmd("HEALTHCHECK NONE"),
        Command::Healthcheck(Healthcheck::None)
    );
    let Command::Healthcheck(h) = cmd(
        "HEALTHCHECK --interval=5m --timeout=3s --start-period=1s --start-interval=2s --retries=3 CMD curl -f http://localhost/ || exit 1",
    ) else {
        panic!()
    };
    assert_eq!(
        h.test(),
        s(&["CMD-SHELL", "curl -f http://localhost/ || exit 1"])
    );
    let Healthcheck::Cmd {
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
        ..
    } = h
    else {
        panic!()
    };
    assert_eq!(interval, Some(Duration::from_secs(300)));
    assert_eq!(timeout, Some(Duration::from_secs(3)));
    assert_eq!(start_period, Some(Duration::from_secs(1)));
    assert_eq!(start_interval, Some(Duration::from_secs(2)));
    assert_eq!(retries, Some(3));
    let Command::Healthcheck(h) = cmd("HEALTHCHECK CMD [\"/bin/check\", \"-q\"]") else {
        panic!()
    };
    assert_eq!(h.test(), s(&["CMD", "/bin/check", "-q"]));
}

#[test]
fn onbuild() {
    let Command::Onbuild(o) = cmd("ONBUILD COPY . /app/src") else {
        panic!()
    };
    assert_eq!(o.expression, "COPY . /app/src");
    assert!(matches!(o.instruction.command, Command::Copy(_)));
    let Command::Onbuild(o) = cmd("onbuild run --network=none make") else {
        panic!()
    };
    assert_eq!(o.expression, "run --network=none make");
}

/// (dockerfile, line, message) for every kind of bad input.
#[test]
fn error_table() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 1, "file with no instructions"),
        ("# only a comment\n\n", 2, "file with no instructions"),
        ("ARG A=1\n", 1, "dockerfile contains no stages to build"),
        ("RUN echo\n", 1, "no build stage in current context"),
        (
            "FROM scratch\nRUNN echo\n",
            2,
            "unknown instruction: RUNN (did you mean RUN?)",
        ),
        (
            "FROM scratch\n\ncopyy a b\n",
            3,
            "unknown instruction: COPYY (did you mean COPY?)",
        ),
        ("FROM scratch\nFOO bar\n", 2, "unknown instruction: FOO"),
        (
            "FROM scratch\nRUN <<EOF\necho\n",
            2,
            "unterminated heredoc \"EOF\"",
        ),
        (
            "FROM scratch\nRUN <<-EOF\n\techo\n  EOF\n",
            2,
            "unterminated heredoc \"EOF\"",
        ),
        (
            "FROM scratch\nENV A=\"open\n",
            2,
            "failed to process \"\\\"open\": unexpected end of statement while looking for matching double-quote",
        ),
        (
            "FROM scratch\nWORKDIR '/x\n",
            2,
            "failed to process \"'/x\": unexpected end of statement while looking for matching single-quote",
        ),
        (
            "FROM scratch\nCOPY ${A a\n",
            2,
            "failed to process \"${A\": syntax error: missing '}'",
        ),
        (
            "FROM scratch\nSHELL /bin/sh -c\n",
            2,
            "SHELL requires the arguments to be in JSON form",
        ),
        (
            "FROM scratch\nSHELL []\n",
            2,
            "SHELL requires at least one argument",
        ),
        (
            "FROM scratch\nCMD [\"a\", 1]\n",
            2,
            "when using JSON array syntax, arrays must be comprised of strings only",
        ),
        (
            "FROM scratch\nCOPY --form=x a b\n",
            2,
            "unknown flag: form (did you mean from?)",
        ),
        ("FROM scratch\nENV --x=1 A=1\n", 2, "unknown flag: x"),
        (
            "FROM scratch\nRUN --network=bogus x\n",
            2,
            "unsupported network mode \"bogus\"",
        ),
        (
            "FROM scratch\nCOPY --chown a b\n",
            2,
            "missing a value on flag: chown",
        ),
        (
            "FROM scratch\nCOPY --link=maybe a b\n",
            2,
            "expecting boolean value for flag link, not: maybe",
        ),
        (
            "FROM scratch\nCOPY onlyone\n",
            2,
            "COPY requires at least two arguments, but only one was provided. Destination could not be determined.",
        ),
        (
            "FROM scratch\nCOPY a <<EOF\nx\nEOF\n",
            2,
            "COPY cannot accept a heredoc as a destination",
        ),
        (
            "FROM scratch\nRUN\n",
            2,
            "RUN requires at least one argument",
        ),
        (
            "FROM scratch\nENV\n",
            2,
            "ENV requires at least one argument",
        ),
        (
            "FROM scratch\nENV ONLYKEY\n",
            2,
            "ENV must have two arguments",
        ),
        ("FROM scratch\nENV =x\n", 2, "ENV names can not be blank"),
        (
            "FROM scratch\nENV A=1 B\n",
            2,
            "Syntax error - can't find = in \"B\". Must be of the form: name=value",
        ),
        (
            "FROM scratch\nLABEL\n",
            2,
            "LABEL requires at least one argument",
        ),
        (
            "FROM scratch\nARG\n",
            2,
            "ARG requires at least one argument",
        ),
        ("FROM scratch\nARG =x\n", 2, "ARG names can not be blank"),
        (
            "FROM scratch\nEXPOSE\n",
            2,
            "EXPOSE requires at least one argument",
        ),
        (
            "FROM scratch\nVOLUME\n",
            2,
            "VOLUME requires at least one argument",
        ),
        (
            "FROM scratch\nVOLUME [\"\"]\n",
            2,
            "VOLUME specified can not be an empty string",
        ),
        (
            "FROM scratch\nWORKDIR\n",
            2,
            "WORKDIR requires exactly one argument",
        ),
        (
            "FROM scratch\nUSER\n",
            2,
            "USER requires exactly one argument",
        ),
        (
            "FROM scratch\nSTOPSIGNAL\n",
            2,
            "STOPSIGNAL requires exactly one argument",
        ),
        (
            "FROM scratch\nMAINTAINER\n",
            2,
            "MAINTAINER requires exactly one argument",
        ),
        ("FROM\n", 1, "FROM requires either one or three arguments"),
        (
            "FROM a b\n",
            1,
            "FROM requires either one or three arguments",
        ),
        (
            "FROM a AS 1bad\n",
            1,
            "invalid name for build stage: \"1bad\", name can't start with a number or contain symbols",
        ),
        (
            "FROM a AS b/c\n",
            1,
            "invalid name for build stage: \"b/c\", name can't start with a number or contain symbols",
        ),
        ("FROM --plat=x a\n", 1, "unknown flag: plat"),
        (
            "FROM scratch\nHEALTHCHECK\n",
            2,
            "HEALTHCHECK requires at least one argument",
        ),
        (
            "FROM scratch\nHEALTHCHECK NONE x\n",
            2,
            "HEALTHCHECK NONE takes no arguments",
        ),
        (
            "FROM scratch\nHEALTHCHECK CMD\n",
            2,
            "Missing command after HEALTHCHECK CMD",
        ),
        (
            "FROM scratch\nHEALTHCHECK RUN x\n",
            2,
            "Unknown type \"RUN\" in HEALTHCHECK (try CMD)",
        ),
        (
            "FROM scratch\nHEALTHCHECK --interval=0.5ms CMD x\n",
            2,
            "Interval \"interval\" cannot be less than 1ms",
        ),
        (
            "FROM scratch\nHEALTHCHECK --timeout=10 CMD x\n",
            2,
            "time: missing unit in duration \"10\"",
        ),
        (
            "FROM scratch\nHEALTHCHECK --retries=-1 CMD x\n",
            2,
            "--retries cannot be negative (-1)",
        ),
        (
            "FROM scratch\nHEALTHCHECK --bogus=1 CMD x\n",
            2,
            "unknown flag: bogus",
        ),
        (
            "FROM scratch\nONBUILD\n",
            2,
            "ONBUILD requires at least one argument",
        ),
        (
            "FROM scratch\nONBUILD ONBUILD RUN x\n",
            2,
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ),
        (
            "FROM scratch\nONBUILD FROM x\n",
            2,
            "FROM isn't allowed as an ONBUILD trigger",
        ),
        (
            "FROM scratch\nONBUILD MAINTAINER x\n",
            2,
            "MAINTAINER isn't allowed as an ONBUILD trigger",
        ),
        (
            "FROM scratch\nONBUILD BOGUS x\n",
            2,
            "unknown instruction: BOGUS",
        ),
        (
            "FROM scratch\nRUN --mount=type=cache x\n",
            2,
            "mount target is required in 'type=cache'",
        ),
    ];
    for (text, line, message) in cases {
        let e = err(text);
        assert_eq!(
            (e.line, e.kind.to_string()),
            (*line, message.to_string()),
            "{text:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("dockerfile parse error on line {line}: {message}")
        );
    }
}

#[test]
fn unknown_instruction_is_typed() {
    let e = err("FROM scratch\nRUNN x\n");
    assert_eq!(
        e.kind,
        ParseErrorKind::UnknownInstruction {
            name: "RUNN".into(),
            suggestion: Some("RUN".into())
        }
    );
}

#[test]
fn every_instruction_parses() {
    let text = "\
# syntax=docker/dockerfile:1
ARG TAG=latest
FROM busybox:${TAG} AS base
LABEL a=b
MAINTAINER me
ENV PATH=/usr/bin:$PATH
ARG X
WORKDIR /app
USER root
ADD a.tar /
COPY . /src/
RUN echo hi
EXPOSE 80
VOLUME /data
STOPSIGNAL SIGINT
HEALTHCHECK CMD true
SHELL [\"/bin/sh\", \"-ec\"]
ONBUILD RUN echo trigger
CMD [\"sh\"]
ENTRYPOINT [\"/bin/sh\", \"-c\"]
";
    let df = parse(text).unwrap();
    let keywords: Vec<&str> = df.stages[0]
        .instructions
        .iter()
        .map(Instruction::keyword)
        .collect();
    assert_eq!(
        keywords,
        [
            "LABEL",
            "MAINTAINER",
            "ENV",
            "ARG",
            "WORKDIR",
            "USER",
            "ADD",
            "COPY",
            "RUN",
            "EXPOSE",
            "VOLUME",
            "STOPSIGNAL",
            "HEALTHCHECK",
            "SHELL",
            "ONBUILD",
            "CMD",
            "ENTRYPOINT"
        ]
    );
    // The AST serialises (for debugging and golden files).
    let json = serde_json::to_string(&df).unwrap();
    assert!(json.contains("\"instruction\":\"HEALTHCHECK\""));
}
