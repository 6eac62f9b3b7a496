//! restund's UDP command port (`admin.restund_listen`): `turnstats` and
//! friends in restund's plain-text format, for runbooks written for restund.
