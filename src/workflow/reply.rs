//! Reply text: rendered from the matching rule's template, optionally rewritten by a language
//! model, and validated before anyone may send it.
//!
//! The model only ever sees and returns reply text: it cannot choose fields, statuses or
//! departments, and its output is used only if it passes the same validation as a template.

use std::collections::BTreeMap;
use std::time::Duration;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};

use super::text;
use crate::config::Secret;
use crate::crd::LlmSpec;

/// A reply that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplyError {
    #[error("reply template {0:?} does not exist")]
    UnknownTemplate(String),
    #[error("failed to render reply template {name:?}: {message}")]
    Render { name: String, message: String },
    #[error("reply is empty")]
    Empty,
    #[error("reply has {0} characters, outside the accepted bounds")]
    Length(usize),
    #[error("reply still contains template placeholders")]
    Placeholder,
    #[error("reply contains the forbidden term {0:?}")]
    Forbidden(String),
    #[error("failed to rewrite the reply with the language model: {0}")]
    Model(String),
}

/// Renders template `name` with `context` (`ticket`, `contact`, `deal`, `rule`). A variable
/// that does not exist is an error, so a reply never goes out with a hole in it.
pub fn render(
    templates: &BTreeMap<String, String>,
    name: &str,
    context: &Value,
) -> Result<String, ReplyError> {
    let source = templates
        .get(name)
        .ok_or_else(|| ReplyError::UnknownTemplate(name.to_owned()))?;
    render_source(name, source, context)
}

/// Renders one template source.
pub fn render_source(name: &str, source: &str, context: &Value) -> Result<String, ReplyError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let render_error = |e: minijinja::Error| ReplyError::Render {
        name: name.to_owned(),
        message: e.to_string(),
    };
    env.add_template("reply", source).map_err(render_error)?;
    let template = env.get_template("reply").map_err(render_error)?;
    let rendered = template
        .render(minijinja::value::Serde(context))
        .map_err(render_error)?;
    Ok(rendered.trim().to_owned())
}

/// Bounds a reply must respect.
#[derive(Clone, Debug)]
pub struct ReplyRules<'a> {
    pub min_chars: usize,
    pub max_chars: usize,
    pub forbidden_terms: &'a [String],
}

/// Checks a reply: not empty, within bounds, no unrendered placeholder, no forbidden term.
pub fn validate(reply: &str, rules: &ReplyRules<'_>) -> Result<(), ReplyError> {
    let length = reply.chars().count();
    if reply.trim().is_empty() {
        return Err(ReplyError::Empty);
    }
    if length < rules.min_chars || length > rules.max_chars {
        return Err(ReplyError::Length(length));
    }
    if ["{{", "}}", "{%", "%}", "{#"]
        .iter()
        .any(|p| reply.contains(p))
    {
        return Err(ReplyError::Placeholder);
    }
    let words = text::Words::new(reply);
    if let Some(term) = text::first_match(rules.forbidden_terms, &words) {
        return Err(ReplyError::Forbidden(term.to_owned()));
    }
    Ok(())
}

/// An OpenAI-compatible chat completion client that rewrites replies.
pub struct ReplyRewriter {
    http: reqwest::Client,
    api_key: Option<Secret>,
}

impl ReplyRewriter {
    pub fn new(http: reqwest::Client, api_key: Option<Secret>) -> Self {
        Self { http, api_key }
    }

    /// The rewritten reply, or an error (the caller then keeps the template's text).
    pub async fn rewrite(&self, spec: &LlmSpec, reply: &str) -> Result<String, ReplyError> {
        let instructions = spec.instructions.as_deref().unwrap_or(
            "Rewrite the following customer support reply so it reads naturally. Keep its \
             language, meaning, facts and length. Answer with the reply text only.",
        );
        let body = json!({
            "model": spec.model,
            "messages": [
                {"role": "system", "content": instructions},
                {"role": "user", "content": reply},
            ],
            "temperature": 0.2,
        });
        let url = format!("{}/chat/completions", spec.url.trim_end_matches('/'));
        let mut request = self
            .http
            .post(url)
            .json(&body)
            .timeout(Duration::from_secs(30));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose());
        }
        let model_error = |e: reqwest::Error| ReplyError::Model(e.without_url().to_string());
        let answer: Value = request
            .send()
            .await
            .map_err(model_error)?
            .error_for_status()
            .map_err(model_error)?
            .json()
            .await
            .map_err(model_error)?;
        answer
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(|text| text.trim().to_owned())
            .ok_or_else(|| ReplyError::Model("answer has no message content".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(forbidden: &[String]) -> ReplyRules<'_> {
        ReplyRules {
            min_chars: 5,
            max_chars: 200,
            forbidden_terms: forbidden,
        }
    }

    #[test]
    fn templates_render_french_text_with_variables() {
        let templates = BTreeMap::from([(
            "doc".to_owned(),
            "Bonjour {{ contact.first_name }},\nvotre dossier « {{ deal.name }} » est complet."
                .to_owned(),
        )]);
        let context = json!({"contact": {"first_name": "Zoé"}, "deal": {"name": "Uber 20€"}});
        let reply = render(&templates, "doc", &context).unwrap();
        assert_eq!(
            reply,
            "Bonjour Zoé,\nvotre dossier « Uber 20€ » est complet."
        );
    }

    #[test]
    fn a_missing_variable_or_template_is_an_error() {
        let templates = BTreeMap::from([("t".to_owned(), "Bonjour {{ contact.nom }}".to_owned())]);
        assert!(matches!(
            render(&templates, "t", &json!({"contact": {}})),
            Err(ReplyError::Render { .. })
        ));
        assert_eq!(
            render(&templates, "x", &json!({})),
            Err(ReplyError::UnknownTemplate("x".into()))
        );
    }

    #[test]
    fn validation_refuses_empty_long_placeholder_and_forbidden_replies() {
        let forbidden = vec!["remboursement garanti".to_owned()];
        assert_eq!(validate("  ", &rules(&forbidden)), Err(ReplyError::Empty));
        assert_eq!(
            validate(&"x".repeat(300), &rules(&forbidden)),
            Err(ReplyError::Length(300))
        );
        assert_eq!(
            validate("Bonjour {{ nom }}", &rules(&forbidden)),
            Err(ReplyError::Placeholder)
        );
        assert_eq!(
            validate("Votre Remboursement garanti arrive", &rules(&forbidden)),
            Err(ReplyError::Forbidden("remboursement garanti".into()))
        );
        assert_eq!(validate("Bonjour, merci.", &rules(&forbidden)), Ok(()));
    }
}
