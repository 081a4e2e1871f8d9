//! CRM search criteria: `((Field:operator:value)and(...))`.
//!
//! Values come from customers (names, companies), so `(`, `)`, `,` and `\` inside them are
//! backslash-escaped: otherwise a company called "Smith (UK), Ltd" would end the condition
//! early or split it. The whole parameter is then URL-encoded by the HTTP client.

/// Zoho accepts at most this many conditions in one criteria.
pub const MAX_CONDITIONS: usize = 10;

/// A comparison in a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// In CRM v8, `equals` on text behaves like "contains".
    Equals,
    NotEqual,
    StartsWith,
    GreaterThan,
    GreaterEqual,
    LessThan,
    LessEqual,
    /// Any of several values.
    In,
}

impl Operator {
    fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "equals",
            Operator::NotEqual => "not_equal",
            Operator::StartsWith => "starts_with",
            Operator::GreaterThan => "greater_than",
            Operator::GreaterEqual => "greater_equal",
            Operator::LessThan => "less_than",
            Operator::LessEqual => "less_equal",
            Operator::In => "in",
        }
    }
}

/// One `(Field:operator:value)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    field: String,
    operator: Operator,
    values: Vec<String>,
}

impl Condition {
    pub fn new(field: impl Into<String>, operator: Operator, value: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            operator,
            values: vec![value.into()],
        }
    }

    pub fn equals(field: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(field, Operator::Equals, value)
    }

    /// `(Field:in:a,b,c)`.
    pub fn any_of<V: Into<String>>(
        field: impl Into<String>,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        Self {
            field: field.into(),
            operator: Operator::In,
            values: values.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Join {
    And,
    Or,
}

/// Conditions that must all hold, or of which one must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Criteria {
    join: Join,
    conditions: Vec<Condition>,
}

impl Criteria {
    /// Every condition must hold.
    pub fn all(conditions: impl IntoIterator<Item = Condition>) -> Self {
        Self {
            join: Join::And,
            conditions: conditions.into_iter().collect(),
        }
    }

    /// At least one condition must hold.
    pub fn any(conditions: impl IntoIterator<Item = Condition>) -> Self {
        Self {
            join: Join::Or,
            conditions: conditions.into_iter().collect(),
        }
    }

    /// `(field:equals:value)`.
    pub fn equals(field: impl Into<String>, value: impl Into<String>) -> Self {
        Self::all([Condition::equals(field, value)])
    }

    /// The `criteria` parameter, before URL encoding.
    pub fn render(&self) -> Result<String, String> {
        if self.conditions.is_empty() || self.conditions.len() > MAX_CONDITIONS {
            return Err(format!(
                "criteria need 1 to {MAX_CONDITIONS} conditions, not {}",
                self.conditions.len()
            ));
        }
        let mut parts = Vec::with_capacity(self.conditions.len());
        for condition in &self.conditions {
            parts.push(render_condition(condition)?);
        }
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        let join = match self.join {
            Join::And => "and",
            Join::Or => "or",
        };
        Ok(format!("({})", parts.join(join)))
    }
}

fn render_condition(condition: &Condition) -> Result<String, String> {
    let field = &condition.field;
    let valid_field = !field.is_empty()
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if !valid_field {
        return Err("a criteria field must be an API name".into());
    }
    if condition.values.is_empty() || condition.values.iter().any(String::is_empty) {
        return Err("a criteria value must not be empty".into());
    }
    let values: Vec<String> = condition.values.iter().map(|v| escape(v)).collect();
    Ok(format!(
        "({field}:{}:{})",
        condition.operator.as_str(),
        values.join(",")
    ))
}

/// Backslash-escapes the characters that structure a criteria.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    for c in value.chars() {
        if matches!(c, '\\' | '(' | ')' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parentheses_commas_and_backslashes_are_escaped() {
        assert_eq!(escape(r"Smith (UK), Ltd\2"), r"Smith \(UK\)\, Ltd\\2");
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn one_condition_renders_without_an_outer_group() {
        let criteria = Criteria::equals("Deal_Name", "Smith (UK), Ltd");
        assert_eq!(
            criteria.render().unwrap(),
            r"(Deal_Name:equals:Smith \(UK\)\, Ltd)"
        );
    }

    #[test]
    fn several_conditions_are_grouped_and_joined() {
        let criteria = Criteria::all([
            Condition::equals("Contact_Name", "42"),
            Condition::new("Stage", Operator::NotEqual, "Closed Lost"),
        ]);
        assert_eq!(
            criteria.render().unwrap(),
            "((Contact_Name:equals:42)and(Stage:not_equal:Closed Lost))"
        );
        let any = Criteria::any([Condition::any_of("Stage", ["A,1", "B"])]);
        assert_eq!(any.render().unwrap(), r"(Stage:in:A\,1,B)");
    }

    #[test]
    fn bad_criteria_are_refused() {
        assert!(Criteria::all([]).render().is_err());
        assert!(
            Criteria::all((0..11).map(|i| Condition::equals("F", i.to_string())))
                .render()
                .is_err()
        );
        assert!(Criteria::equals("Bad Field)", "x").render().is_err());
        assert!(Criteria::equals("F", "").render().is_err());
    }
}
