//! Switchyard: a webhook event router.
