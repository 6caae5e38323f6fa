//! A message's text as it is sent to a model.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

/// A message's text, shared, and escaped for JSON once, when it is made: a
/// conversation's kept context hands the same messages to every turn, which
/// then neither copies nor escapes them again (escaping 200 messages of
/// context, about 40 KB, was most of serializing a turn's request).
/// Serialized as its escaped JSON string, as is, by `serde_json` (the
/// serializer of every request to a provider).
#[derive(Clone)]
pub struct Text(Arc<Escaped>);

struct Escaped {
    text: String,
    json: Box<RawValue>,
}

impl Text {
    pub fn as_str(&self) -> &str {
        &self.0.text
    }

    /// The bytes this text takes in memory (the text and its escaped copy).
    pub fn footprint(&self) -> usize {
        self.0.text.len() + self.0.json.get().len()
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        let json = serde_json::value::to_raw_value(&text).expect("a string is JSON");
        Text(Arc::new(Escaped { text, json }))
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Text::from(text.to_owned())
    }
}

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.json.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use crate::provider::ChatMessage;

    /// A message's text goes out as `serde_json` writes a string, escapes
    /// and all, and reads back as it was.
    #[test]
    fn a_text_serializes_as_its_string() {
        for text in [
            "",
            "plain",
            "quote \" backslash \\ newline \n tab \t",
            "\u{1} é 😀 </script>",
        ] {
            let message = ChatMessage {
                role: "user",
                content: text.into(),
            };
            assert_eq!(&*message.content, text);
            assert_eq!(
                serde_json::to_string(&message).expect("JSON"),
                serde_json::json!({ "role": "user", "content": text }).to_string()
            );
            assert!(message.content.footprint() >= 2 * text.len() + 2);
        }
    }
}
