//! The local stack's one error: what failed (the template, moto, a call to AWS, the
//! configuration), with the context it failed in.

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("template: {0}")]
    Template(String),
    #[error("moto: {0}")]
    Moto(String),
    #[error("AWS: {0}")]
    Aws(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Context { context: String, source: Box<LocalError> },
}

impl LocalError {
    pub fn context(self, context: &str) -> Self {
        LocalError::Context { context: context.to_owned(), source: Box::new(self) }
    }
}
