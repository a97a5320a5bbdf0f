//! Data: readers for the formats users have, audio features, video generators, artifact encoding.
//! No engine code and no burn here.

pub mod audio;
pub mod error;
pub mod fbank;
pub mod frames;
pub mod idx;
pub mod images;
pub mod layouts;
pub mod shards;
pub mod stream;
pub mod tensors;
pub mod video;
pub mod video_file;

pub use error::DataError;
