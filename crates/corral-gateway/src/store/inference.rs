//! Inference records: providers (their keys only ever sealed, see `crate::inference::keys`),
//! token usage counted per user, sandbox, provider, model and UTC day, and per-user budgets.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rusqlite::{OptionalExtension, Row, params};

use super::{Store, StoreError, is_unique_violation, now};

/// The wire format a provider speaks, which says how its key is sent and how its usage reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Anthropic's Messages API (`x-api-key`).
    Anthropic,
    /// OpenAI's API (`Authorization: Bearer`).
    OpenAi,
    /// A server speaking OpenAI's API: vLLM, LM Studio, Ollama, llama.cpp, a gateway.
    OpenAiCompatible,
}

impl ProviderKind {
    /// The name the API, the CLI and the store use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::OpenAi => "openai",
            Self::OpenAiCompatible => "openai-compatible",
        }
    }

    /// Whether it speaks OpenAI's wire format.
    pub fn is_openai(self) -> bool {
        matches!(self, Self::OpenAi | Self::OpenAiCompatible)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "anthropic" => Ok(Self::Anthropic),
            "openai" => Ok(Self::OpenAi),
            "openai-compatible" => Ok(Self::OpenAiCompatible),
            other => Err(format!(
                "unknown provider kind {other:?}: use anthropic, openai or openai-compatible"
            )),
        }
    }
}

/// A model provider. Its key is sealed; this struct never holds it in the clear.
#[derive(Clone, PartialEq, Eq)]
pub struct Provider {
    /// Name, unique; what policies say (`anthropic/claude-*`) and the router's path names.
    pub name: String,
    /// Its wire format.
    pub kind: ProviderKind,
    /// Where requests go: scheme, host, port and any path prefix, without `/v1`.
    pub base_url: String,
    /// The key, sealed with the gateway's provider key.
    pub sealed_key: Vec<u8>,
    /// Whether its host may be a private, loopback or link-local address (a local server).
    pub allow_private: bool,
    /// Model aliases: the name a sandbox asks for → the name sent to the provider.
    pub aliases: BTreeMap<String, String>,
    /// Unix seconds.
    pub created: i64,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("allow_private", &self.allow_private)
            .field("aliases", &self.aliases)
            .finish_non_exhaustive()
    }
}

/// Usage summed over some rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    /// Requests forwarded.
    pub requests: i64,
    /// Input (prompt) tokens.
    pub input_tokens: i64,
    /// Output (completion) tokens.
    pub output_tokens: i64,
}

impl UsageTotals {
    /// Input and output tokens together.
    pub fn tokens(&self) -> i64 {
        self.input_tokens + self.output_tokens
    }
}

/// Usage of one user, sandbox, provider and model on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The sandbox owner's email.
    pub user: String,
    /// The sandbox id.
    pub sandbox: String,
    /// Provider name.
    pub provider: String,
    /// Model name as sent to the provider.
    pub model: String,
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// The counts.
    pub totals: UsageTotals,
}

/// A user's inference limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// Input plus output tokens per UTC day.
    pub tokens_per_day: Option<i64>,
    /// Input plus output tokens per UTC month.
    pub tokens_per_month: Option<i64>,
    /// Requests per UTC day.
    pub requests_per_day: Option<i64>,
    /// Requests per UTC month.
    pub requests_per_month: Option<i64>,
    /// Requests per minute from any one of the user's sandboxes.
    pub sandbox_requests_per_minute: Option<i64>,
}

const PROVIDER_COLUMNS: &str = "name, kind, base_url, sealed_key, allow_private, aliases, created";

fn provider_from_row(row: &Row<'_>) -> rusqlite::Result<Provider> {
    let kind: String = row.get(1)?;
    let aliases: String = row.get(5)?;
    Ok(Provider {
        name: row.get(0)?,
        // The CHECK constraint admits only the three names.
        kind: kind.parse().unwrap_or(ProviderKind::OpenAiCompatible),
        base_url: row.get(2)?,
        sealed_key: row.get(3)?,
        allow_private: row.get(4)?,
        // Written by `add_provider` from a map, so it always parses.
        aliases: serde_json::from_str(&aliases).unwrap_or_default(),
        created: row.get(6)?,
    })
}

impl Store {
    /// Adds a provider; [`StoreError::ProviderTaken`] if the name exists.
    pub fn add_provider(&self, provider: &Provider) -> Result<(), StoreError> {
        let aliases = serde_json::to_string(&provider.aliases).unwrap_or_else(|_| "{}".into());
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO providers ({PROVIDER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
                params![
                    provider.name,
                    provider.kind.as_str(),
                    provider.base_url,
                    provider.sealed_key,
                    provider.allow_private,
                    aliases,
                    now()
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::ProviderTaken(provider.name.clone())
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    /// All providers, by name.
    pub fn providers(&self) -> Result<Vec<Provider>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers ORDER BY name"
        ))?;
        let rows = statement.query_map([], provider_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The provider with this name.
    pub fn provider(&self, name: &str) -> Result<Option<Provider>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {PROVIDER_COLUMNS} FROM providers WHERE name = ?1"),
                [name],
                provider_from_row,
            )
            .optional()?)
    }

    /// Removes a provider; false if there was none. Its usage rows stay.
    pub fn remove_provider(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM providers WHERE name = ?1", [name])?
            > 0)
    }

    /// Adds one request's usage to its row for `day`.
    pub fn add_usage(&self, row: &UsageRow, user_id: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO inference_usage (user_id, sandbox_id, provider, model, day, requests, \
             input_tokens, output_tokens) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (user_id, sandbox_id, provider, model, day) DO UPDATE SET \
             requests = requests + excluded.requests, \
             input_tokens = input_tokens + excluded.input_tokens, \
             output_tokens = output_tokens + excluded.output_tokens",
            params![
                user_id,
                row.sandbox,
                row.provider,
                row.model,
                row.day,
                row.totals.requests,
                row.totals.input_tokens,
                row.totals.output_tokens
            ],
        )?;
        Ok(())
    }

    /// Usage rows, newest day first; only `user_id`'s when given.
    pub fn usage(&self, user_id: Option<i64>) -> Result<Vec<UsageRow>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT u.email, i.sandbox_id, i.provider, i.model, i.day, i.requests, \
             i.input_tokens, i.output_tokens FROM inference_usage i \
             JOIN users u ON u.id = i.user_id \
             WHERE ?1 IS NULL OR i.user_id = ?1 \
             ORDER BY i.day DESC, u.email, i.sandbox_id, i.provider, i.model",
        )?;
        let rows = statement.query_map([user_id], |row| {
            Ok(UsageRow {
                user: row.get(0)?,
                sandbox: row.get(1)?,
                provider: row.get(2)?,
                model: row.get(3)?,
                day: row.get(4)?,
                totals: UsageTotals {
                    requests: row.get(5)?,
                    input_tokens: row.get(6)?,
                    output_tokens: row.get(7)?,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A user's usage on days starting with `prefix` (`YYYY-MM-DD` for a day, `YYYY-MM`
    /// for a month).
    pub fn usage_since(&self, user_id: i64, prefix: &str) -> Result<UsageTotals, StoreError> {
        Ok(self.conn().query_row(
            "SELECT coalesce(sum(requests), 0), coalesce(sum(input_tokens), 0), \
             coalesce(sum(output_tokens), 0) FROM inference_usage \
             WHERE user_id = ?1 AND substr(day, 1, length(?2)) = ?2",
            params![user_id, prefix],
            |row| {
                Ok(UsageTotals {
                    requests: row.get(0)?,
                    input_tokens: row.get(1)?,
                    output_tokens: row.get(2)?,
                })
            },
        )?)
    }

    /// A user's budget (no limits when none was set).
    pub fn budget(&self, user_id: i64) -> Result<Budget, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT tokens_per_day, tokens_per_month, requests_per_day, requests_per_month, \
                 sandbox_requests_per_minute FROM inference_budgets WHERE user_id = ?1",
                [user_id],
                |row| {
                    Ok(Budget {
                        tokens_per_day: row.get(0)?,
                        tokens_per_month: row.get(1)?,
                        requests_per_day: row.get(2)?,
                        requests_per_month: row.get(3)?,
                        sandbox_requests_per_minute: row.get(4)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }

    /// Sets (replaces) a user's budget.
    pub fn set_budget(&self, user_id: i64, budget: &Budget) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO inference_budgets (user_id, tokens_per_day, tokens_per_month, \
             requests_per_day, requests_per_month, sandbox_requests_per_minute) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                user_id,
                budget.tokens_per_day,
                budget.tokens_per_month,
                budget.requests_per_day,
                budget.requests_per_month,
                budget.sandbox_requests_per_minute
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Role;
    use super::*;

    #[test]
    fn providers_usage_and_budgets_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let user = store.create_user("a@x", Role::User, None).unwrap();
        let provider = Provider {
            name: "local".into(),
            kind: ProviderKind::OpenAiCompatible,
            base_url: "http://10.0.0.5:8000".into(),
            sealed_key: vec![1, 2, 3],
            allow_private: true,
            aliases: BTreeMap::from([("fast".into(), "qwen".into())]),
            created: 0,
        };
        store.add_provider(&provider).unwrap();
        assert!(matches!(
            store.add_provider(&provider),
            Err(StoreError::ProviderTaken(_))
        ));
        let read = store.provider("local").unwrap().unwrap();
        assert_eq!((read.kind, read.aliases), (provider.kind, provider.aliases));
        let row = |day: &str, input| UsageRow {
            user: String::new(),
            sandbox: "s1".into(),
            provider: "local".into(),
            model: "qwen".into(),
            day: day.into(),
            totals: UsageTotals {
                requests: 1,
                input_tokens: input,
                output_tokens: 5,
            },
        };
        store.add_usage(&row("2026-01-02", 10), user.id).unwrap();
        store.add_usage(&row("2026-01-02", 20), user.id).unwrap();
        store.add_usage(&row("2026-01-03", 1), user.id).unwrap();
        let day = store.usage_since(user.id, "2026-01-02").unwrap();
        assert_eq!(
            (day.requests, day.input_tokens, day.output_tokens),
            (2, 30, 10)
        );
        assert_eq!(store.usage_since(user.id, "2026-01").unwrap().tokens(), 46);
        assert_eq!(store.usage(Some(user.id)).unwrap().len(), 2);
        assert_eq!(store.budget(user.id).unwrap(), Budget::default());
        let budget = Budget {
            tokens_per_day: Some(100),
            ..Budget::default()
        };
        store.set_budget(user.id, &budget).unwrap();
        assert_eq!(store.budget(user.id).unwrap(), budget);
        assert!(store.remove_provider("local").unwrap());
        assert!(!store.remove_provider("local").unwrap());
    }
}
