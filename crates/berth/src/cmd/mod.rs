pub mod build;
pub mod containers;
pub mod images;
pub mod registry;
pub mod run;
pub mod runtime;
pub mod system;
pub mod volumes;
