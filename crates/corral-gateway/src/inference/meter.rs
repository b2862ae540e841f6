//! Token counting: reads the usage a provider reports in its response, as the response
//! streams through, without holding it back.
//!
//! Both wire formats report usage in a `usage` object: Anthropic's `input_tokens` and
//! `output_tokens` (plus `cache_creation_input_tokens` and `cache_read_input_tokens`, counted
//! as input), OpenAI's `prompt_tokens` and `completion_tokens` (or `input_tokens` and
//! `output_tokens` in its Responses API). A JSON response carries it at the top level. A
//! stream (server-sent events) carries it in events: Anthropic's `message_start`
//! (`message.usage`) and `message_delta` (`usage`, output counted so far), OpenAI's last
//! chunk (`usage`, when the request asked for `stream_options.include_usage`) or the
//! Responses API's `response.completed` (`response.usage`). Counts within one response only
//! grow, so the largest seen is the response's.

use serde_json::Value;

/// Most bytes of a JSON response kept to read its usage; a larger one counts no tokens.
const MAX_JSON_BYTES: usize = 8 * 1024 * 1024;

/// Longest server-sent-event line kept; a longer one is skipped.
const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Input and output tokens one response reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Input (prompt) tokens.
    pub input: i64,
    /// Output (completion) tokens.
    pub output: i64,
}

/// Reads usage from a response's body as its chunks pass.
#[derive(Debug)]
pub struct Meter {
    stream: bool,
    /// JSON: the body so far. Stream: the current, unfinished line.
    pending: Vec<u8>,
    overflow: bool,
    tokens: Tokens,
}

impl Meter {
    /// A meter for a response whose content type is `content_type`.
    pub fn for_content_type(content_type: Option<&str>) -> Self {
        let stream = content_type.is_some_and(|t| t.starts_with("text/event-stream"));
        Self {
            stream,
            pending: Vec::new(),
            overflow: false,
            tokens: Tokens::default(),
        }
    }

    /// Reads one chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        if !self.stream {
            if self.pending.len() + chunk.len() > MAX_JSON_BYTES {
                self.overflow = true;
                self.pending = Vec::new();
            }
            if !self.overflow {
                self.pending.extend_from_slice(chunk);
            }
            return;
        }
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            if !self.overflow {
                self.pending.extend_from_slice(&rest[..end]);
                let line = std::mem::take(&mut self.pending);
                self.line(&line);
            }
            self.pending.clear();
            self.overflow = false;
            rest = &rest[end + 1..];
        }
        if self.pending.len() + rest.len() > MAX_LINE_BYTES {
            self.overflow = true;
            self.pending = Vec::new();
        } else if !self.overflow {
            self.pending.extend_from_slice(rest);
        }
    }

    /// The tokens the whole body reported (call once it has ended).
    pub fn finish(mut self) -> Tokens {
        if self.stream {
            let line = std::mem::take(&mut self.pending);
            if !self.overflow {
                self.line(&line);
            }
        } else if !self.overflow
            && let Ok(value) = serde_json::from_slice::<Value>(&self.pending)
        {
            self.read_usage(&value);
        }
        self.tokens
    }

    /// One line of a server-sent-event stream; only `data:` lines carry JSON.
    fn line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        if let Ok(value) = serde_json::from_slice::<Value>(data.trim_ascii()) {
            self.read_usage(&value);
        }
    }

    /// Takes the usage an event or a response reports, wherever the format puts it.
    fn read_usage(&mut self, value: &Value) {
        let places = [
            value.get("usage"),
            value.get("message").and_then(|m| m.get("usage")),
            value.get("response").and_then(|r| r.get("usage")),
        ];
        for usage in places.into_iter().flatten() {
            let count = |names: &[&str]| -> Option<i64> {
                let found: Vec<i64> = names
                    .iter()
                    .filter_map(|n| usage.get(*n).and_then(Value::as_i64))
                    .collect();
                (!found.is_empty()).then(|| found.iter().sum())
            };
            let input = count(&[
                "input_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
            ])
            .or_else(|| count(&["prompt_tokens"]));
            let output = count(&["output_tokens"]).or_else(|| count(&["completion_tokens"]));
            if let Some(input) = input {
                self.tokens.input = self.tokens.input.max(input);
            }
            if let Some(output) = output {
                self.tokens.output = self.tokens.output.max(output);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metered(content_type: &str, body: &str, chunk: usize) -> Tokens {
        let mut meter = Meter::for_content_type(Some(content_type));
        for piece in body.as_bytes().chunks(chunk) {
            meter.feed(piece);
        }
        meter.finish()
    }

    #[test]
    fn anthropic_and_openai_json_responses() {
        let anthropic =
            r#"{"type":"message","content":[],"usage":{"input_tokens":12,"output_tokens":7}}"#;
        let openai =
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}"#;
        for chunk in [1, 5, 1000] {
            assert_eq!(
                metered("application/json", anthropic, chunk),
                Tokens {
                    input: 12,
                    output: 7
                }
            );
            assert_eq!(
                metered("application/json", openai, chunk),
                Tokens {
                    input: 9,
                    output: 4
                }
            );
        }
    }

    #[test]
    fn anthropic_and_openai_streams_split_anywhere() {
        let anthropic = "event: message_start\n\
            data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n\
            event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let openai = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
            data: {\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":3}}\n\n\
            data: [DONE]\n\n";
        for chunk in [1, 3, 7, 4096] {
            assert_eq!(
                metered("text/event-stream; charset=utf-8", anthropic, chunk),
                Tokens {
                    input: 25,
                    output: 15
                }
            );
            assert_eq!(
                metered("text/event-stream", openai, chunk),
                Tokens {
                    input: 8,
                    output: 3
                }
            );
        }
    }

    #[test]
    fn a_response_without_usage_counts_nothing() {
        assert_eq!(
            metered("application/json", "not json", 4),
            Tokens::default()
        );
        assert_eq!(
            metered("text/event-stream", "data: {}\n", 4),
            Tokens::default()
        );
    }
}
