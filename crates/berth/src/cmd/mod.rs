pub mod images;
pub mod system;
