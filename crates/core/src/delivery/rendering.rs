//! Message templates rendered with minijinja: HTML auto-escaping for email bodies, and
//! strict undefined variables, so a missing parameter is a clear error at send time
//! instead of a message with a hole in it. Every render runs under fuel, recursion and
//! output-size limits, so a template cannot hold a worker until its timeout.

use std::io;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};

/// One channel's content of a template.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelContent {
    /// Email subject, push title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Plain text: the SMS, the push body, the email's text part, the webhook text.
    pub body: String,
    /// The email's HTML part; parameters inserted into it are HTML-escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rendered {
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("template {part} could not be rendered: {message}")]
pub struct RenderError {
    pub part: &'static str,
    pub message: String,
}

/// Work one render of one part may do (instructions, plus one per 64 bytes of data):
/// far above any real message, and reached in well under a second.
pub const RENDER_FUEL: u64 = 1_000_000;
/// Nesting of blocks, loops and macro calls: real messages nest a few levels.
pub const MAX_RECURSION: usize = 50;
/// Output of one rendered part: an email body past this is not a message anyone reads.
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

const HTML: &str = "html";
const TEXT: &str = "text";

fn environment(undefined: UndefinedBehavior) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(undefined);
    env.set_auto_escape_callback(|name| if name == HTML { AutoEscape::Html } else { AutoEscape::None });
    env.set_fuel(Some(RENDER_FUEL));
    env.set_recursion_limit(MAX_RECURSION);
    env
}

/// A buffer that refuses to grow past `MAX_RENDERED_BYTES`, ending the render there.
#[derive(Default)]
struct Limited {
    out: Vec<u8>,
    full: bool,
}

impl io::Write for Limited {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.out.len() + buf.len() > MAX_RENDERED_BYTES {
            self.full = true;
            return Err(io::Error::other("output limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a render failed; `limit` is set when it ran past one of the limits.
struct Failure {
    message: String,
    limit: bool,
}

fn render_part(
    env: &Environment<'_>,
    part: &'static str,
    kind: &str,
    source: &str,
    params: &serde_json::Value,
) -> Result<String, RenderError> {
    run(env, kind, source, params).map_err(|f| RenderError { part, message: f.message })
}

fn run(env: &Environment<'_>, kind: &str, source: &str, params: &serde_json::Value) -> Result<String, Failure> {
    let plain = |e: minijinja::Error| Failure { message: e.to_string(), limit: false };
    let template = env.template_from_named_str(kind, source).map_err(plain)?;
    let mut out = Limited::default();
    match template.render_captured_to(minijinja::value::Serde(params), &mut out) {
        Ok(_) => Ok(String::from_utf8(out.out).expect("minijinja writes UTF-8")),
        Err(_) if out.full => {
            Err(Failure { message: format!("the output is larger than {MAX_RENDERED_BYTES} bytes"), limit: true })
        }
        Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(Failure {
            message: format!("the template does more work than a render may ({RENDER_FUEL} fuel)"),
            limit: true,
        }),
        Err(e) => {
            let limit = e.to_string().contains("recursion");
            Err(Failure { message: e.to_string(), limit })
        }
    }
}

/// Checks that every part of `content` parses and, rendered without parameters, stays
/// within the limits: a loop over a literal range is refused here, when it is stored. A
/// loop over a parameter is bounded by the same limits when it is sent.
pub fn check(content: &ChannelContent) -> Result<(), RenderError> {
    // Chainable: missing parameters render as nothing instead of failing the check.
    let env = environment(UndefinedBehavior::Chainable);
    let parts = [
        ("subject", TEXT, content.subject.as_deref()),
        ("body", TEXT, Some(content.body.as_str())),
        ("html", HTML, content.html.as_deref()),
    ];
    for (part, kind, source) in parts {
        let Some(source) = source else { continue };
        env.template_from_named_str(kind, source).map_err(|e| RenderError { part, message: e.to_string() })?;
        if let Err(Failure { message, limit: true }) = run(&env, kind, source, &serde_json::json!({})) {
            return Err(RenderError { part, message });
        }
    }
    Ok(())
}

pub fn render(content: &ChannelContent, params: &serde_json::Value) -> Result<Rendered, RenderError> {
    let env = environment(UndefinedBehavior::Strict);
    Ok(Rendered {
        subject: content.subject.as_deref().map(|s| render_part(&env, "subject", TEXT, s, params)).transpose()?,
        body: render_part(&env, "body", TEXT, &content.body, params)?,
        html: content.html.as_deref().map(|h| render_part(&env, "html", HTML, h, params)).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn content(body: &str, html: Option<&str>) -> ChannelContent {
        ChannelContent { subject: Some("Hi {{ name }}".into()), body: body.into(), html: html.map(Into::into) }
    }

    #[test]
    fn parameters_fill_every_part() {
        let out = render(
            &content("You owe {{ amount }}", Some("<p>{{ amount }}</p>")),
            &json!({"name": "Ana", "amount": "12 €"}),
        )
        .unwrap();
        assert_eq!(out.subject.as_deref(), Some("Hi Ana"));
        assert_eq!(out.body, "You owe 12 €");
        assert_eq!(out.html.as_deref(), Some("<p>12 €</p>"));
    }

    #[test]
    fn html_parts_escape_parameters_and_text_parts_do_not() {
        let out =
            render(&content("{{ name }}", Some("<b>{{ name }}</b>")), &json!({"name": "<script>x</script>"})).unwrap();
        assert_eq!(out.html.as_deref(), Some("<b>&lt;script&gt;x&lt;&#x2f;script&gt;</b>"));
        assert_eq!(out.body, "<script>x</script>");
    }

    #[test]
    fn a_missing_parameter_is_an_error_naming_the_part() {
        let err = render(&content("Due {{ due_date }}", None), &json!({"name": "Ana"})).unwrap_err();
        assert_eq!(err.part, "body");
        assert!(err.message.contains("undefined"), "{}", err.message);
    }

    #[test]
    fn check_refuses_a_template_that_does_not_parse() {
        let err = check(&content("{{ unclosed", None)).unwrap_err();
        assert_eq!(err.part, "body");
        assert!(check(&content("fine {{ x }}", Some("<p>{% if x %}y{% endif %}</p>"))).is_ok());
    }

    const NESTED_LOOPS: &str = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";

    #[test]
    fn check_refuses_nested_100000_step_loops() {
        let err = check(&content(NESTED_LOOPS, None)).unwrap_err();
        assert_eq!(err.part, "body");
        assert!(err.message.contains("more work than a render may"), "{}", err.message);
    }

    #[test]
    fn check_passes_loops_over_missing_parameters() {
        assert!(check(&content("{% for item in items %}{{ item.name }}{% endfor %}", None)).is_ok());
    }

    #[test]
    fn a_render_that_runs_out_of_fuel_is_an_error() {
        let started = std::time::Instant::now();
        let err = render(
            &content("{% for i in n %}{% for j in n %}x{% endfor %}{% endfor %}", None),
            &json!({
                "name": "Ana", "n": (0..100_000).collect::<Vec<u32>>()
            }),
        )
        .unwrap_err();
        assert_eq!(err.part, "body");
        assert!(err.message.contains("more work than a render may"), "{}", err.message);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_render_past_the_output_limit_is_an_error() {
        let big = "x".repeat(MAX_RENDERED_BYTES / 2 + 1);
        let err = render(&content("{{ big }}{{ big }}", None), &json!({"name": "Ana", "big": big})).unwrap_err();
        assert!(err.message.contains("larger than"), "{}", err.message);
    }

    #[test]
    fn deep_recursion_is_refused() {
        let source = "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}";
        let err = check(&content(source, None)).unwrap_err();
        assert!(err.message.contains("recursion"), "{}", err.message);
    }
}
