//! MailerActor's inbox.

use actix::Message;

use crate::domain::{Email, Order};
use crate::error::AppError;

/// Tells the customer their order reached its current status.
#[derive(Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct SendOrderEmail {
    pub order: Order,
    pub to: Email,
    pub to_name: String,
    pub request_id: Option<String>,
}
