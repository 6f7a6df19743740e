//! `aula users` and `aula keys`: the accounts in the database.

use super::{db_store, print};
use crate::cli::{KeysCommand, UsersCommand};
use anyhow::{Context, anyhow};
pub use aula_store::tables::date_of;
use aula_store::tables::{Keys, Users};

pub async fn users(c: UsersCommand) -> anyhow::Result<()> {
    use aula_store::User;
    match c {
        UsersCommand::Add {
            name,
            role,
            groups,
            update,
            db,
        } => {
            let role = role.parse().map_err(|e: String| anyhow!(e))?;
            let store = db_store(&db).await?;
            store
                .put_user(
                    &User {
                        name: name.clone(),
                        role,
                        groups,
                    },
                    update,
                )
                .await?;
            eprintln!("aula: user `{name}` saved; make a key with `aula keys create {name}`");
        }
        UsersCommand::Import { file, db } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let list = aula_store::identity::parse_users_csv(&text)
                .map_err(|e| anyhow!("{}: {e}", file.display()))?;
            let store = db_store(&db).await?;
            for u in &list {
                store.put_user(u, true).await?;
            }
            eprintln!("aula: {} users imported", list.len());
        }
        UsersCommand::List { json, db } => {
            let users = Users(db_store(&db).await?.users().await?);
            print(&if json {
                super::json(&users)?
            } else {
                users.to_text()
            });
        }
        UsersCommand::Remove { name, db } => {
            db_store(&db).await?.remove_user(&name).await?;
            eprintln!("aula: user `{name}` and their keys removed");
        }
    }
    Ok(())
}

pub async fn keys(c: KeysCommand) -> anyhow::Result<()> {
    match c {
        KeysCommand::Create { user, expires, db } => {
            let (info, secret) = db_store(&db).await?.create_key(&user, expires).await?;
            // The key alone on stdout, so `KEY=$(aula keys create ada)` works.
            println!("{secret}");
            eprintln!(
                "aula: key {} for `{user}` (expires {}); it is shown only now",
                info.id,
                date_of(info.expires_ms)
            );
        }
        KeysCommand::Revoke { id_or_user, db } => {
            let n = db_store(&db).await?.revoke(&id_or_user).await?;
            eprintln!(
                "aula: {n} key(s) revoked; running gateways stop accepting them within a second"
            );
        }
        KeysCommand::List { user, db } => {
            let keys = Keys(db_store(&db).await?.keys(user.as_deref()).await?);
            print(&keys.to_text());
        }
    }
    Ok(())
}
