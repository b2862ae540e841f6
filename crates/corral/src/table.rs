//! Plain-text tables for the gateway commands' human output: a header of upper-case column
//! names, columns padded to their widest cell.

use anyhow::Context;
use serde_json::Value;

/// Prints the gateway's list answer `value` as pretty JSON (for scripts) or as a table of
/// `columns` (for people).
pub fn print_list(value: &Value, columns: &[&str], json_output: bool) -> anyhow::Result<()> {
    if json_output {
        println!("{}", serde_json::to_string_pretty(value)?);
        return Ok(());
    }
    let rows = value
        .as_array()
        .context("the gateway's answer is not a list")?;
    print(columns, &rows.iter().collect::<Vec<_>>());
    Ok(())
}

/// A JSON value as a table cell: strings bare, nothing as `-`, lists joined with commas.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Prints `rows` (JSON objects) as a table of `columns`.
pub fn print(columns: &[&str], rows: &[&Value]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| cell(&row[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let render = |values: &[String]| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    println!("{}", render(&header));
    for row in &cells {
        println!("{}", render(row));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cells_show_nothing_as_a_dash_and_lists_joined() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!([])), "-");
        assert_eq!(cell(&json!([80, 443])), "80,443");
        assert_eq!(cell(&json!("x")), "x");
        assert_eq!(cell(&json!(7)), "7");
    }
}
