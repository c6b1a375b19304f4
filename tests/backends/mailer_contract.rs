//! The `Mailer` contract, written once and run against the embedded mailer (`FileMailer`, one
//! `.eml` per email in a temporary directory) and the real one (`SesMailer` on a throwaway moto
//! server, with a verified sender). Each sent email is read back from where it landed (the file,
//! or moto's record of what SES sent) and decoded with the same MIME parser, so both are held to
//! the same subject, recipient, text and HTML. The real variants return early, with a SKIPPED
//! line, when moto is not installed.

use lettre::message::Mailbox;
use order_service::domain::Email;
use order_service::mail::{Mailer, OutgoingEmail};

use crate::support::moto::{parse_email, Moto, SentEmail};

const SENDER: &str = "orders@shop.example.com";

/// Where a mailer's emails can be read back from.
enum Outbox {
    Dir(std::path::PathBuf),
    Moto(Moto),
}

impl Outbox {
    async fn sent(&self) -> Vec<SentEmail> {
        match self {
            Outbox::Dir(dir) => {
                // One directory per day (`MAIL_DIR/YYYY-MM-DD/`), the files in them.
                let entries = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
                    std::fs::read_dir(dir)
                        .expect("read mail dir")
                        .map(|e| e.expect("dir entry").path())
                        .collect()
                };
                let mut files: Vec<_> = entries(dir)
                    .into_iter()
                    .flat_map(|p| if p.is_dir() { entries(&p) } else { vec![p] })
                    .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                    .collect();
                files.sort();
                files
                    .iter()
                    .map(|p| parse_email(&std::fs::read_to_string(p).expect("read .eml")))
                    .collect()
            }
            Outbox::Moto(moto) => moto.sent_emails().await,
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if let Outbox::Dir(dir) = self {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn email(reference: &str, to: &str) -> OutgoingEmail {
    OutgoingEmail {
        to: Email::parse(to).expect("valid address"),
        to_name: "Zoë Müller".into(),
        subject: format!("Your order is confirmed – {reference}"),
        text: format!(
            "Hello Zoë,\n\nyour order {reference} is confirmed.\nTotal: 12,50 €\n\n\
             A line long enough to need folding in quoted-printable, which wraps at 76 characters.\n"
        ),
        html: format!(
            "<html><body><p>Hello Zoë,</p><p>your order <b>{reference}</b> is confirmed.</p>\
             <p>Total: 12,50&nbsp;€</p></body></html>"
        ),
        reference: reference.into(),
    }
}

fn assert_same(sent: &SentEmail, original: &OutgoingEmail) {
    assert_eq!(sent.to, [original.to.as_str()], "{sent:?}");
    assert!(sent.from.contains(SENDER), "from: {}", sent.from);
    assert!(sent.from.contains("Order Service"), "from: {}", sent.from);
    assert_eq!(sent.subject, original.subject);
    // Transports may end the body with a line break; the content is what counts.
    assert_eq!(sent.text.trim_end(), original.text.trim_end());
    assert_eq!(sent.html.trim_end(), original.html.trim_end());
}

async fn ping_answers(mailer: &dyn Mailer, _outbox: &Outbox) {
    mailer.ping().await.expect("ping");
}

async fn a_sent_email_can_be_read_back(mailer: &dyn Mailer, outbox: &Outbox) {
    let original = email(
        "order-65f1c2a9e4b0a1b2c3d4e5f6-completed",
        "zoe@example.com",
    );
    mailer.send(&original).await.expect("send");
    let sent = outbox.sent().await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_same(&sent[0], &original);
}

async fn every_email_goes_out(mailer: &dyn Mailer, outbox: &Outbox) {
    let first = email("order-1-processing", "first@example.com");
    let second = email("order-2-completed", "second@example.com");
    mailer.send(&first).await.unwrap();
    mailer.send(&second).await.unwrap();
    let sent = outbox.sent().await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    for original in [&first, &second] {
        let found = sent
            .iter()
            .find(|s| s.subject == original.subject)
            .unwrap_or_else(|| panic!("{} not sent: {sent:?}", original.reference));
        assert_same(found, original);
    }
}

async fn a_batch_goes_out_each_email_to_its_own_recipient(mailer: &dyn Mailer, outbox: &Outbox) {
    let emails: Vec<OutgoingEmail> = (1..=3)
        .map(|i| {
            email(
                &format!("order-{i}-completed"),
                &format!("customer{i}@example.com"),
            )
        })
        .collect();
    let outcomes = mailer.send_many(&emails).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let sent = outbox.sent().await;
    assert_eq!(sent.len(), 3, "{sent:?}");
    for original in &emails {
        let found = sent
            .iter()
            .find(|s| s.subject == original.subject)
            .unwrap_or_else(|| panic!("{} not sent: {sent:?}", original.reference));
        assert_same(found, original);
    }
}

/// Generates one `#[tokio::test]` per contract function for each implementation.
macro_rules! mailer_contract {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $test() {
                    let (mailer, outbox) = super::file_mailer();
                    super::$test(&mailer, &outbox).await;
                }
            )*
        }

        mod real {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some((mailer, outbox)) = super::ses_mailer().await else { return };
                    super::$test(&mailer, &outbox).await;
                }
            )*
        }
    };
}

mailer_contract!(
    ping_answers,
    a_sent_email_can_be_read_back,
    every_email_goes_out,
    a_batch_goes_out_each_email_to_its_own_recipient
);

fn sender_mailbox() -> Mailbox {
    Mailbox::new(
        Some("Order Service".into()),
        SENDER.parse().expect("valid sender"),
    )
}

fn file_mailer() -> (order_service::mail::file::FileMailer, Outbox) {
    let dir = crate::support::temp_dir("mail-contract");
    let mailer = order_service::mail::file::FileMailer::new(dir.clone(), sender_mailbox())
        .expect("file mailer");
    (mailer, Outbox::Dir(dir))
}

async fn ses_mailer() -> Option<(order_service::mail::ses::SesMailer, Outbox)> {
    let moto = crate::support::moto::start()?;
    moto.verify_sender(SENDER).await;
    let mailer = order_service::mail::ses::SesMailer::with_endpoint(
        Email::parse(SENDER).unwrap(),
        &moto.endpoint(),
        crate::support::moto::REGION,
    )
    .expect("SES mailer");
    Some((mailer, Outbox::Moto(moto)))
}

/// What only the real mailer has: a sender SES must have verified.
mod ses_only {
    use order_service::domain::Email;
    use order_service::error::BackendError;
    use order_service::mail::ses::SesMailer;
    use order_service::mail::Mailer;

    #[tokio::test]
    async fn a_send_from_an_unverified_sender_is_an_error() {
        let Some(moto) = crate::support::moto::start() else {
            return;
        };
        let mailer = SesMailer::with_endpoint(
            Email::parse("unverified@shop.example.com").unwrap(),
            &moto.endpoint(),
            crate::support::moto::REGION,
        )
        .unwrap();
        let err = mailer
            .send(&super::email("order-1-completed", "zoe@example.com"))
            .await
            .expect_err("SES refuses an unverified sender");
        assert!(
            matches!(
                err,
                BackendError::Other {
                    backend: "mailer",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(moto.sent_emails().await.is_empty());
    }

    /// SES bills and throttles requests: a batch of emails is one request.
    #[tokio::test]
    async fn a_batch_of_emails_is_one_ses_request() {
        let Some((mailer, super::Outbox::Moto(ref moto))) = super::ses_mailer().await else {
            return;
        };
        let emails: Vec<_> = (1..=5)
            .map(|i| {
                super::email(
                    &format!("order-{i}-completed"),
                    &format!("c{i}@example.com"),
                )
            })
            .collect();
        let outcomes = mailer.send_many(&emails).await;
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        assert_eq!(moto.ses_send_requests().await, 1);
        assert_eq!(moto.sent_emails().await.len(), 5);
    }

    /// The account's template deleted by hand (or lost with an emulator's restart) does not
    /// lose an email: the mailer makes it again and sends.
    #[tokio::test]
    async fn a_deleted_template_is_made_again() {
        let Some((mailer, super::Outbox::Moto(ref moto))) = super::ses_mailer().await else {
            return;
        };
        let first = super::email("order-1-completed", "first@example.com");
        mailer.send(&first).await.expect("first send");
        let templates = moto
            .ses()
            .list_templates()
            .send()
            .await
            .expect("list templates");
        let names: Vec<String> = templates
            .templates_metadata()
            .iter()
            .filter_map(|t| t.name().map(str::to_string))
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        moto.ses()
            .delete_template()
            .template_name(&names[0])
            .send()
            .await
            .expect("delete the template");
        let second = super::email("order-2-completed", "second@example.com");
        mailer
            .send(&second)
            .await
            .expect("send after the template was deleted");
        let sent = moto.sent_emails().await;
        assert_eq!(sent.len(), 2, "{sent:?}");
        super::assert_same(&sent[1], &second);
    }

    #[tokio::test]
    async fn an_unreachable_ses_is_unavailable() {
        let port = crate::support::free_port();
        let mailer = SesMailer::with_endpoint(
            Email::parse(super::SENDER).unwrap(),
            &format!("http://127.0.0.1:{port}"),
            crate::support::moto::REGION,
        )
        .unwrap();
        let err = mailer.ping().await.expect_err("nothing listens there");
        assert!(
            matches!(
                err,
                BackendError::Unavailable {
                    backend: "mailer",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

#[test]
fn the_mime_parser_decodes_what_mailers_send() {
    let raw = "From: Order Service <shop@example.com>\r\n\
               To: \"Doe, Jane\" <jane@example.com>\r\n\
               Subject: =?utf-8?b?Q2Fmw6k=?=\r\n =?utf-8?q?_=E2=82=AC?=\r\n\
               Content-Type: multipart/alternative;\r\n boundary=\"b1\"\r\n\r\n\
               --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\
               Content-Transfer-Encoding: quoted-printable\r\n\r\n\
               12,00 =E2=82=AC, a long=\r\n line\r\n\
               --b1\r\nContent-Type: text/html; charset=utf-8\r\n\
               Content-Transfer-Encoding: base64\r\n\r\n\
               PHA+aGk8L3A+\r\n\
               --b1--\r\n";
    let email = parse_email(raw);
    assert_eq!(email.to, ["jane@example.com"]);
    assert_eq!(email.from, "Order Service <shop@example.com>");
    assert_eq!(email.subject, "Café €");
    assert_eq!(email.text, "12,00 €, a long line");
    assert_eq!(email.html, "<p>hi</p>");
}
