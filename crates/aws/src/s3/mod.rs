//! S3: the imports bucket.

pub mod import_files;
