pub mod containers;
pub mod images;
pub mod run;
pub mod system;
pub mod volumes;
