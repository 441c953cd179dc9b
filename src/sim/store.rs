//! The simulated NAS state: accounts, sessions, Chat users/channels/posts, integrations.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::rand;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn channel_of(post_id: i64) -> i64 {
    post_id >> 32
}

#[derive(Clone, Debug)]
pub(crate) struct Account {
    pub password: String,
    pub admin: bool,
    pub disabled: bool,
    pub user_id: i64,
    /// Some(code) when 2-step verification is on for the account.
    pub otp: Option<String>,
    pub devices: Vec<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub sid: String,
    pub synotoken: String,
    pub account: String,
    pub last_used: Instant,
    /// Logged in with `format=cookie` (or no `format`): DSM sets the `id` cookie and takes it
    /// back. A `format=sid` session is returned in the JSON only and travels as `_sid`.
    pub cookie_format: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UserKind {
    User,
    Bot,
}

#[derive(Clone, Debug)]
pub(crate) struct User {
    pub user_id: i64,
    pub username: String,
    pub nickname: String,
    pub deleted: bool,
    pub is_disabled: bool,
    pub kind: UserKind,
    pub email: String,
    pub description: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChanKind {
    Public,
    Private,
    Anonymous,
    Chatbot,
    /// Exists on real NASes (system bot conversations); no API here creates one.
    #[allow(dead_code)]
    Synobot,
}

impl ChanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChanKind::Public => "public",
            ChanKind::Private => "private",
            ChanKind::Anonymous => "anonymous",
            ChanKind::Chatbot => "chatbot",
            ChanKind::Synobot => "synobot",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Channel {
    pub channel_id: i64,
    pub name: String,
    pub kind: ChanKind,
    pub members: Vec<i64>,
    pub creator_id: i64,
    pub create_at: i64,
    pub encrypted: bool,
    pub archived: bool,
    pub purpose: String,
    /// Users who closed the conversation; it reappears for them on the next post.
    pub closed_for: BTreeSet<i64>,
    pub last_view: HashMap<i64, i64>,
    pub next_seq: i64,
    /// Every new account joins it (the seed's "general").
    pub auto_join: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct FileBlob {
    pub name: String,
    pub content_type: String,
    pub data: bytes::Bytes,
}

#[derive(Clone, Debug)]
pub(crate) struct Post {
    pub post_id: i64,
    pub channel_id: i64,
    pub creator_id: i64,
    pub message: String,
    pub create_at: i64,
    pub update_at: i64,
    /// 0 top-level without replies; own id once it is a thread root; root id for replies.
    pub thread_id: i64,
    pub comment_count: i64,
    pub last_comment_at: i64,
    pub kind: String,
    pub file: Option<FileBlob>,
    pub mentions: Vec<i64>,
    pub is_sticky: bool,
    pub last_pin_at: i64,
    /// sticker_name -> users, in first-use order.
    pub reactions: Vec<(String, Vec<i64>)>,
    pub vote: Option<Vote>,
}

#[derive(Clone, Debug)]
pub(crate) struct VoteChoice {
    /// Choice ids are strings on the wire (LS-OBS).
    pub id: String,
    pub text: String,
    pub voters: Vec<i64>,
}

#[derive(Clone, Debug)]
pub(crate) struct Vote {
    /// "open", "close" or "delete".
    pub state: String,
    pub choices: Vec<VoteChoice>,
    pub multiple: bool,
    pub anonymous: bool,
    pub add_option: bool,
    /// ms; 0 = never.
    pub expire_at: i64,
}

impl Vote {
    pub fn effective_state(&self, now: i64) -> &str {
        if self.state == "open" && self.expire_at > 0 && now >= self.expire_at {
            "close"
        } else {
            &self.state
        }
    }

    pub fn to_json(&self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .map(|c| {
                let voters: Vec<i64> = if self.anonymous {
                    Vec::new()
                } else {
                    c.voters.clone()
                };
                json!({"id": c.id, "text": c.text, "count": c.voters.len(), "voters": voters})
            })
            .collect();
        json!({
            "state": self.effective_state(now_ms()),
            "choices": choices,
            "multiple": self.multiple,
            "anonymous": self.anonymous,
            "add_option": self.add_option,
            "expire_at": self.expire_at,
        })
    }
}

impl Post {
    pub fn is_reply(&self) -> bool {
        self.thread_id != 0 && self.thread_id != self.post_id
    }

    pub fn to_json(&self) -> Value {
        let file_props = match &self.file {
            Some(f) => json!({"name": f.name, "size": f.data.len()}),
            None => Value::Null,
        };
        let reactions: Vec<Value> = self
            .reactions
            .iter()
            .map(|(s, u)| json!({"sticker_name": s, "user_ids": u, "count": u.len()}))
            .collect();
        json!({
            "post_id": self.post_id,
            "channel_id": self.channel_id,
            "creator_id": self.creator_id,
            "message": self.message,
            "create_at": self.create_at,
            "update_at": self.update_at,
            "thread_id": self.thread_id,
            "comment_count": self.comment_count,
            "last_comment_at": self.last_comment_at,
            "type": self.kind,
            "file_props": file_props,
            "mentions": self.mentions,
            "delete_at": 0,
            "is_sticky": self.is_sticky,
            "last_pin_at": self.last_pin_at,
            "reactions": reactions,
            "props": match &self.vote {
                Some(v) => json!({"vote": v.to_json()}),
                None => json!({}),
            },
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IntegKind {
    Incoming,
    Outgoing,
    Slash,
    Chatbot,
}

#[derive(Clone, Debug)]
pub(crate) struct Integration {
    pub user_id: i64,
    pub kind: IntegKind,
    pub token: String,
    pub name: String,
    /// Empty until `Bot.set`: a bot without a nickname is "not legal" for External.
    pub nickname: String,
    pub channel_id: i64,
    pub url: String,
    pub trigger_word: String,
    pub command: String,
    pub description: String,
    pub events: Vec<String>,
    pub icon_url: String,
    pub is_disabled: bool,
    pub creator_id: i64,
    pub create_at: i64,
    pub purpose: String,
    pub welcome_note: String,
    pub hide_from_user: bool,
    /// Send instants in the last second, for the External rate limit.
    pub sends: VecDeque<Instant>,
}

#[derive(Clone, Debug)]
pub(crate) struct Scheduled {
    pub cronjob_id: i64,
    pub channel_id: i64,
    pub creator_id: i64,
    pub message: String,
    pub send_at: i64,
}

#[derive(Default)]
pub(crate) struct State {
    pub accounts: BTreeMap<String, Account>,
    pub users: BTreeMap<i64, User>,
    pub channels: BTreeMap<i64, Channel>,
    pub posts: BTreeMap<i64, Post>,
    pub sessions: HashMap<String, Session>,
    /// Sids that ended in a way DSM still recognises, with the error they answer: 107 for a
    /// newer login of the same account, 105 after a reboot that answers so.
    pub killed: HashMap<String, i64>,
    pub integrations: BTreeMap<i64, Integration>,
    /// (user_id, post_id) -> remind_at
    pub reminders: BTreeMap<(i64, i64), i64>,
    pub schedules: BTreeMap<i64, Scheduled>,
    pub login_failures: HashMap<IpAddr, Vec<Instant>>,
    pub blocked: HashSet<IpAddr>,
    pub next_user_id: i64,
    pub next_channel_id: i64,
    pub next_cronjob_id: i64,
    pub demo_webhook_token: String,
    pub demo_bot_token: String,
    /// (user_id, channel_id) -> that user's channel preferences.
    pub chan_prefs: HashMap<(i64, i64), serde_json::Map<String, Value>>,
    pub user_prefs: HashMap<i64, serde_json::Map<String, Value>>,
    pub admin_settings: serde_json::Map<String, Value>,
    /// Mimic Chat 2.4.1 v5, where Post.list ignored offset/limit and returned the newest 10.
    pub post_list_ignores_offset: bool,
    /// Mimic ACE's v8: Post.list pages only from an anchor; without one it answers the oldest post.
    pub post_list_anchor_only: bool,
    /// The SynoToken the next login hands out instead of a random one (test hook).
    pub next_synotoken: Option<String>,
    /// Post.list answers the posts it picks oldest first (no source gives DSM's order; the
    /// shared bench data lists a page so).
    pub post_list_oldest_first: bool,
    /// The Chat package is stopped (or still starting): Info lists no `SYNO.Chat.*` API and
    /// calling one answers 102.
    pub chat_stopped: bool,
    /// A file post's `Post.create` answers only `file_props`, as the seed describes it.
    pub upload_answers_file_props_only: bool,
    /// A file post's `Post.create` answers success without `data`.
    pub upload_answers_without_data: bool,
    /// `Channel.Named.create` refuses a `type` parameter with 407 (one n8n note; another says
    /// `type` is required: the reference leaves it open).
    pub named_create_refuses_type: bool,
    /// Sessions idle longer than this are expired (for the online status).
    pub idle_timeout: std::time::Duration,
}

impl State {
    pub fn new(seed: bool, idle_timeout: std::time::Duration) -> State {
        let mut st = State {
            idle_timeout,
            next_user_id: 1,
            next_channel_id: 1,
            next_cronjob_id: 1,
            // The answer the only source describes for an upload (ref §4.6): `file_props`, no
            // `post_id`, so the gateway's look-up of the post is what tests run by default.
            upload_answers_file_props_only: true,
            ..State::default()
        };
        st.admin_settings = default_admin_settings();
        st.add_account(super::DEMO_ACCOUNT, super::DEMO_PASSWORD, true);
        if let Some(u) = st.users.get_mut(&1) {
            u.nickname = "Admin".into();
        }
        if seed {
            st.seed_demo();
        }
        st
    }

    pub fn add_account(&mut self, name: &str, password: &str, admin: bool) -> i64 {
        if let Some(a) = self.accounts.get_mut(name) {
            a.password = password.to_string();
            a.admin = admin;
            return a.user_id;
        }
        let user_id = self.next_user_id;
        self.next_user_id += 1;
        self.accounts.insert(
            name.to_string(),
            Account {
                password: password.to_string(),
                admin,
                disabled: false,
                user_id,
                otp: None,
                devices: Vec::new(),
            },
        );
        let mut nickname = name.to_string();
        if let Some(first) = nickname.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        self.users.insert(
            user_id,
            User {
                user_id,
                username: name.to_string(),
                nickname,
                deleted: false,
                is_disabled: false,
                kind: UserKind::User,
                email: format!("{name}@example.com"),
                description: String::new(),
            },
        );
        for ch in self.channels.values_mut().filter(|c| c.auto_join) {
            ch.members.push(user_id);
        }
        user_id
    }

    pub fn add_channel(
        &mut self,
        name: &str,
        kind: ChanKind,
        creator: i64,
        members: Vec<i64>,
    ) -> i64 {
        let channel_id = self.next_channel_id;
        self.next_channel_id += 1;
        self.channels.insert(
            channel_id,
            Channel {
                channel_id,
                name: name.to_string(),
                kind,
                members,
                creator_id: creator,
                create_at: now_ms(),
                encrypted: false,
                archived: false,
                purpose: String::new(),
                closed_for: BTreeSet::new(),
                last_view: HashMap::new(),
                next_seq: 1,
                auto_join: false,
            },
        );
        channel_id
    }

    /// Appends a post (or reply when `thread_id` names a root) and returns its id.
    pub fn add_post(
        &mut self,
        channel_id: i64,
        creator: i64,
        message: &str,
        thread_id: i64,
        at: i64,
    ) -> Option<i64> {
        let ch = self.channels.get_mut(&channel_id)?;
        let post_id = (channel_id << 32) | ch.next_seq;
        ch.next_seq += 1;
        ch.closed_for.clear();
        let post = Post {
            post_id,
            channel_id,
            creator_id: creator,
            message: message.to_string(),
            create_at: at,
            update_at: at,
            thread_id,
            comment_count: 0,
            last_comment_at: 0,
            kind: "normal".into(),
            file: None,
            mentions: parse_mentions(message),
            is_sticky: false,
            last_pin_at: 0,
            reactions: Vec::new(),
            vote: None,
        };
        if thread_id != 0
            && let Some(root) = self.posts.get_mut(&thread_id)
        {
            root.thread_id = root.post_id;
            root.comment_count += 1;
            root.last_comment_at = at;
        }
        self.posts.insert(post_id, post);
        Some(post_id)
    }

    pub fn channel_posts(&self, channel_id: i64) -> impl DoubleEndedIterator<Item = &Post> {
        self.posts
            .range((channel_id << 32)..((channel_id + 1) << 32))
            .map(|(_, p)| p)
    }

    pub fn user_json(&self, u: &User) -> Value {
        let online = self.sessions.values().any(|s| {
            s.last_used.elapsed() <= self.idle_timeout
                && self
                    .accounts
                    .get(&s.account)
                    .is_some_and(|a| a.user_id == u.user_id)
        });
        json!({
            "user_id": u.user_id,
            "username": u.username,
            "nickname": u.nickname,
            "status": if online { "online" } else { "offline" },
            "deleted": u.deleted,
            "is_disabled": u.is_disabled,
            "type": match u.kind { UserKind::User => "user", UserKind::Bot => "bot" },
            "user_props": {"email": u.email, "description": u.description},
        })
    }

    pub fn channel_json(&self, ch: &Channel, viewer: i64) -> Value {
        let last_post_at = self
            .channel_posts(ch.channel_id)
            .map(|p| p.create_at)
            .max()
            .unwrap_or(0);
        let last_view_at = ch.last_view.get(&viewer).copied().unwrap_or(0);
        let is_joined = ch.members.contains(&viewer);
        let unread = if is_joined {
            self.channel_posts(ch.channel_id)
                .filter(|p| p.creator_id != viewer && p.create_at > last_view_at)
                .count()
        } else {
            0
        };
        json!({
            "channel_id": ch.channel_id,
            "name": ch.name,
            "type": ch.kind.as_str(),
            "members": ch.members,
            "creator_id": ch.creator_id,
            "total_member_count": ch.members.len(),
            "is_joined": is_joined,
            "last_post_at": last_post_at,
            "last_view_at": last_view_at,
            "unread": unread,
            "encrypted": ch.encrypted,
            "purpose": ch.purpose,
            "create_at": ch.create_at,
        })
    }

    pub fn add_bot_user(&mut self, name: &str) -> i64 {
        let user_id = self.next_user_id;
        self.next_user_id += 1;
        self.users.insert(
            user_id,
            User {
                user_id,
                username: name.to_string(),
                nickname: name.to_string(),
                deleted: false,
                is_disabled: false,
                kind: UserKind::Bot,
                email: String::new(),
                description: String::new(),
            },
        );
        user_id
    }

    pub fn add_integration(&mut self, kind: IntegKind, name: &str, creator: i64) -> i64 {
        let user_id = self.add_bot_user(name);
        self.integrations.insert(
            user_id,
            Integration {
                user_id,
                kind,
                token: rand::token64(),
                name: name.to_string(),
                nickname: String::new(),
                channel_id: 0,
                url: String::new(),
                trigger_word: String::new(),
                command: String::new(),
                description: String::new(),
                events: vec!["message".into()],
                icon_url: String::new(),
                // Created integrations start disabled: N8N saw External 404 until Bot.enable.
                is_disabled: true,
                creator_id: creator,
                create_at: now_ms(),
                purpose: String::new(),
                welcome_note: String::new(),
                hide_from_user: false,
                sends: VecDeque::new(),
            },
        );
        user_id
    }

    /// Materialises scheduled posts whose send time has passed.
    pub fn run_due_schedules(&mut self) {
        let now = now_ms();
        let due: Vec<i64> = self
            .schedules
            .values()
            .filter(|s| s.send_at <= now)
            .map(|s| s.cronjob_id)
            .collect();
        for id in due {
            if let Some(s) = self.schedules.remove(&id) {
                self.add_post(s.channel_id, s.creator_id, &s.message, 0, s.send_at.max(0));
            }
        }
    }

    fn seed_demo(&mut self) {
        let alice = self.add_account("alice", "alice-pass", false);
        let bob = self.add_account("bob", "bob-pass", false);
        let carol = self.add_account("carol", "carol-pass", false);
        let admin = 1;
        let general = self.add_channel(
            "general",
            ChanKind::Public,
            admin,
            vec![admin, alice, bob, carol],
        );
        let random = self.add_channel("random", ChanKind::Public, admin, vec![admin, alice, bob]);
        let ops = self.add_channel("ops", ChanKind::Private, admin, vec![admin, carol]);
        let dm = self.add_channel("", ChanKind::Anonymous, admin, vec![admin, alice]);
        if let Some(ch) = self.channels.get_mut(&general) {
            ch.purpose = "Company-wide announcements".into();
            ch.auto_join = true;
        }

        let t0 = now_ms() - 3_600_000;
        let m = 60_000;
        let p = |st: &mut State, c, u, msg: &str, th, t| st.add_post(c, u, msg, th, t).unwrap_or(0);
        p(self, general, admin, "Welcome to #general! 👋", 0, t0);
        p(
            self,
            general,
            alice,
            "Prix: 5% de remise & livraison offerte — café ☕ <https://example.com/offre?a=1&b=2|details>",
            0,
            t0 + m,
        );
        let root = p(
            self,
            general,
            bob,
            "Release 1.2 planning: who takes the changelog?",
            0,
            t0 + 2 * m,
        );
        p(
            self,
            general,
            alice,
            "I can do it \"today\" + tomorrow's review",
            root,
            t0 + 3 * m,
        );
        p(
            self,
            general,
            admin,
            "Thanks! 日本語もOK 🎉",
            root,
            t0 + 4 * m,
        );
        let pinned = p(
            self,
            general,
            admin,
            "Maintenance window: Saturday 02:00-04:00 UTC\nPlease save your work.",
            0,
            t0 + 5 * m,
        );
        if let Some(post) = self.posts.get_mut(&pinned) {
            post.is_sticky = true;
            post.last_pin_at = t0 + 6 * m;
        }
        p(
            self,
            general,
            carol,
            "Ünïcödé & symbols: 100% + a=b?c #tag",
            0,
            t0 + 7 * m,
        );
        p(
            self,
            random,
            alice,
            "Anyone up for lunch? 🍜",
            0,
            t0 + 8 * m,
        );
        p(
            self,
            random,
            bob,
            "50% off at the bakery & café today",
            0,
            t0 + 9 * m,
        );
        p(
            self,
            ops,
            carol,
            "Disk 3 on nas-02 reports SMART warnings",
            0,
            t0 + 10 * m,
        );
        p(
            self,
            dm,
            alice,
            "Hi admin, can you add me to #ops?",
            0,
            t0 + 11 * m,
        );

        // Ready-to-use integrations: a legal incoming webhook and a chatbot.
        let hook = self.add_integration(IntegKind::Incoming, "Demo webhook", admin);
        if let Some(i) = self.integrations.get_mut(&hook) {
            i.channel_id = general;
            i.nickname = "Demo webhook".into();
            i.is_disabled = false;
            self.demo_webhook_token = i.token.clone();
        }
        let bot = self.add_integration(IntegKind::Chatbot, "helper", admin);
        if let Some(i) = self.integrations.get_mut(&bot) {
            i.nickname = "helper".into();
            i.is_disabled = false;
            i.purpose = "Answers questions".into();
            i.welcome_note = "Hi, I am helper.".into();
            self.demo_bot_token = i.token.clone();
        }
        for c in [general, random] {
            if let Some(ch) = self.channels.get_mut(&c) {
                ch.members.push(bot);
            }
        }
    }
}

fn default_admin_settings() -> serde_json::Map<String, Value> {
    let v = json!({
        "allow_edit_message": true,
        "allow_edit_message_time_within_min": 0,
        "allow_delete_message": true,
        "allow_create_public_channel": true,
        "allow_create_private_channel": true,
        "allow_chatbot": true,
        "allow_integration": true,
        "enable_url_preview": true,
        "retention_days": 0,
    });
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// `@u:<id>` markers inside a message become the post's `mentions`.
fn parse_mentions(message: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for part in message.split("@u:").skip(1) {
        let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(id) = digits.parse::<i64>()
            && !out.contains(&id)
        {
            out.push(id);
        }
    }
    out
}

impl State {
    /// The 1:1 conversation between a chatbot and a user, created on first use.
    pub fn chatbot_channel(&mut self, bot: i64, user: i64) -> i64 {
        let found = self
            .channels
            .values()
            .find(|c| {
                c.kind == ChanKind::Chatbot && c.members.contains(&bot) && c.members.contains(&user)
            })
            .map(|c| c.channel_id);
        match found {
            Some(id) => id,
            None => self.add_channel("", ChanKind::Chatbot, bot, vec![bot, user]),
        }
    }

    /// A token usable with SYNO.Chat.External: known, with a nickname, enabled (else 404).
    pub fn legal_integration(&self, token: &str) -> Option<&Integration> {
        self.integrations.values().find(|i| {
            i.token == token
                && !i.nickname.is_empty()
                && !i.is_disabled
                && self.users.get(&i.user_id).is_some_and(|u| !u.deleted)
        })
    }
}
