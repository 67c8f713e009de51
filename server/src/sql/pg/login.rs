//! Logins on the PostgreSQL wire, one [`Login`] per connection: the method follows from the
//! user name of the startup message ([`Logins::method`]): anonymous; a password-file user's
//! password in clear (`AuthenticationCleartextPassword`), only over TLS or from loopback;
//! anything else SCRAM-SHA-256 against the API token ([`TokenVerifiers`]), driven by pgwire's
//! SASL handler. An admitted connection is registered for cancel requests.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::pgwire;
use futures_util::{Sink, SinkExt};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, ConnectionHandle, METADATA_USER, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::sync::Mutex;
use tracing::info;

use super::{Endpoint, pg_error};
use crate::sql::{Logins, Method};

/// SCRAM's iteration count (RFC 7677's minimum, PostgreSQL's default).
const SCRAM_ITERATIONS: usize = 4096;

/// The login of one connection: the method is chosen from the user name in the startup
/// message, then the exchange is driven to its end.
pub(super) struct Login {
    endpoint: Arc<Endpoint>,
    state: Mutex<LoginState>,
}

enum LoginState {
    AwaitingStartup,
    Password,
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

impl Login {
    pub(super) fn new(endpoint: Arc<Endpoint>) -> Login {
        Login {
            endpoint,
            state: Mutex::new(LoginState::AwaitingStartup),
        }
    }

    /// Admits the client: cancel key, registration for cancel requests, parameters, ready.
    async fn admit<C>(&self, client: &mut C, method: Method) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, key) = RandomPidSecretKeyGenerator::default().generate(client);
        client.set_pid_and_secret_key(pid, key.clone());
        let (handle, guard) = self.endpoint.connections.register(pid, key);
        client
            .session_extensions()
            .insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert(guard);
        info!(peer = %client.socket_addr(), user = ?client.metadata().get(METADATA_USER), ?method, "PostgreSQL client logged in");
        finish_authentication(client, self.endpoint.parameters.as_ref()).await
    }
}

fn refused_login(user: &str, why: &str) -> PgWireError {
    pg_error(
        "FATAL",
        "28P01",
        format!("password authentication failed for user \"{user}\": {why}"),
    )
}

#[async_trait]
impl StartupHandler for Login {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut state = self.state.lock().await;
        let user = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        match (&mut *state, message) {
            (LoginState::AwaitingStartup, PgWireFrontendMessage::Startup(startup)) => {
                let user = startup
                    .parameters
                    .get(METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                match self.endpoint.logins.method(&user) {
                    Some(Method::Anonymous) => {
                        protocol_negotiation(client, &startup).await?;
                        save_startup_parameters_to_metadata(client, &startup);
                        self.admit(client, Method::Anonymous).await
                    }
                    Some(Method::Password) => {
                        let peer = client.socket_addr();
                        if !client.is_secure() && !peer.ip().is_loopback() {
                            return Err(refused_login(
                                &user,
                                "this connection is not encrypted and would carry the password in clear: connect with sslmode=require",
                            ));
                        }
                        protocol_negotiation(client, &startup).await?;
                        save_startup_parameters_to_metadata(client, &startup);
                        client.set_state(PgWireConnectionState::AuthenticationInProgress);
                        *state = LoginState::Password;
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::CleartextPassword,
                            ))
                            .await?;
                        Ok(())
                    }
                    Some(Method::Token) => {
                        let mut scram = ScramAuth::new(self.endpoint.tokens.clone());
                        scram.set_iterations(SCRAM_ITERATIONS);
                        let handler = SASLAuthStartupHandler::new(self.endpoint.parameters.clone())
                            .with_scram(scram)
                            .with_connection_manager(self.endpoint.connections.clone());
                        handler
                            .on_startup(client, PgWireFrontendMessage::Startup(startup))
                            .await?;
                        *state = LoginState::Scram(Box::new(handler));
                        Ok(())
                    }
                    None => Err(refused_login(
                        &user,
                        "log in as a password-file user, or with any user name and the API token as the password",
                    )),
                }
            }
            (LoginState::Password, PgWireFrontendMessage::PasswordMessageFamily(message)) => {
                let password = message.into_password()?;
                if self.endpoint.logins.check(&user, &password.password).await {
                    *state = LoginState::AwaitingStartup;
                    self.admit(client, Method::Password).await
                } else {
                    Err(refused_login(&user, "wrong password"))
                }
            }
            (
                LoginState::Scram(handler),
                message @ PgWireFrontendMessage::PasswordMessageFamily(_),
            ) => {
                handler.on_startup(client, message).await?;
                if matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
                    info!(peer = %client.socket_addr(), %user, method = ?Method::Token, "PostgreSQL client logged in");
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// SCRAM's view of the tokens: the salted password of the token `user` must know, with a
/// salt drawn once per process.
#[derive(Debug)]
pub(super) struct TokenVerifiers {
    logins: Arc<Logins>,
    salt: [u8; 16],
    salted: std::sync::Mutex<Vec<(String, Vec<u8>)>>,
}

impl TokenVerifiers {
    pub(super) fn new(logins: Arc<Logins>) -> TokenVerifiers {
        TokenVerifiers {
            logins,
            salt: rand::random(),
            salted: std::sync::Mutex::default(),
        }
    }
}

#[async_trait]
impl AuthSource for TokenVerifiers {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        let Some(token) = self.logins.token_for(user) else {
            return Err(refused_login(user, "no token is configured"));
        };
        let mut salted = self.salted.lock().expect("token verifiers");
        let known = salted
            .iter()
            .find(|(t, _)| t == token)
            .map(|(_, s)| s.clone());
        let verifier = known.unwrap_or_else(|| {
            let s = gen_salted_password(token, &self.salt, SCRAM_ITERATIONS);
            salted.push((token.to_owned(), s.clone()));
            s
        });
        Ok(Password::new(Some(self.salt.to_vec()), verifier))
    }
}
