pub mod containers;
pub mod images;
pub mod run;
pub mod runtime;
pub mod system;
pub mod volumes;
