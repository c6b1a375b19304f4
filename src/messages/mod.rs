//! The typed messages each actor accepts, one file per inbox. The reply type is part of each
//! message, so a handler that answers the wrong thing does not compile.

pub mod auth;
pub mod inventory;
pub mod mailer;
pub mod order;
pub mod sqs_poller;
