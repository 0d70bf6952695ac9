//! Deciding the facts about leads: a registration (the first of a customer in its
//! attribution window owns it, a later one is a duplicate) and a hand-off (a hop added
//! to the referral chain).

use chrono::{DateTime, Duration, Utc};
use compact_str::CompactString;

use super::{Apply, Decider};
use crate::decision::Rejection;
use crate::model::{CustomerKey, Event, LeadOutcomeKind, MAX_HOPS, check_id};
use crate::records::Lead;

impl Decider<'_> {
    /// `lead_registered`: a new lead of an active partner; it owns its customer unless an
    /// open lead of the program owns it already.
    pub(super) fn lead_registered(
        &mut self,
        lead: String,
        program: String,
        customer: String,
        version: CustomerKey,
        partner: String,
        at: DateTime<Utc>,
    ) -> Result<Apply, Rejection> {
        check_id("lead", &lead)?;
        let customer = crate::customer::key(version, &customer).map_err(Rejection::Invalid)?;
        let prog = self.st.program(&program)?;
        self.st.active_partner(&partner, &program)?;
        if self.st.leads.contains_key(lead.as_str()) {
            return Err(Rejection::Conflict(format!("lead '{lead}' already exists")));
        }
        let window = Duration::days(i64::from(prog.latest().spec.attribution_window_days));
        let open = |(_, x): &(CompactString, Lead)| x.registered_at + window > at;
        // v1 compares recorded keys exactly, as it always did; v2 compares v2 forms, those
        // of keys recorded under v1 too (the `customer` module).
        let owner = match version {
            CustomerKey::V1 => self.st.leads.owner(&program, &customer).filter(open),
            CustomerKey::V2 => self.st.leads.owners_folded(&program, &customer).into_iter().find(open),
        }
        .map(|(l, _)| l.to_string());
        let chain = vec![partner];
        let (outcome, dup) = match &owner {
            Some(o) => (LeadOutcomeKind::Duplicate, Some(o.clone())),
            None => (LeadOutcomeKind::Owner, None),
        };
        self.derived(
            Event::LeadOutcome { lead: lead.clone(), outcome, owner: dup.clone(), chain: chain.clone() },
            None,
        );
        Ok(Box::new(move |s| {
            let owns = dup.is_none();
            let (program, customer) = (program.into(), customer.into());
            let chain = chain.into_iter().map(CompactString::from).collect();
            let duplicate_of = dup.map(CompactString::from);
            s.leads.insert(&lead, &Lead { program, customer, chain, registered_at: at, duplicate_of });
            if owns {
                s.leads.set_owner(&lead);
            }
        }))
    }

    /// `lead_handed_off`: from the lead's last hop to an active partner not yet in its
    /// chain, within [`MAX_HOPS`].
    pub(super) fn lead_handed_off(&mut self, lead: String, from: String, to: String) -> Result<Apply, Rejection> {
        let l = self.st.leads.get(lead.as_str()).ok_or_else(|| Rejection::NotFound(format!("lead '{lead}'")))?;
        if let Some(o) = &l.duplicate_of {
            return Err(Rejection::Invalid(format!("lead '{lead}' is a duplicate of '{o}' and cannot be handed off")));
        }
        if l.chain.last().map(CompactString::as_str) != Some(from.as_str()) {
            return Err(Rejection::Invalid(format!(
                "'{from}' does not hold lead '{lead}' (its last hop is '{}')",
                l.chain.last().map_or("", CompactString::as_str)
            )));
        }
        if l.chain.iter().any(|p| *p == to) {
            return Err(Rejection::Invalid(format!(
                "handing lead '{lead}' to '{to}' would make a referral cycle (already in the chain)"
            )));
        }
        if l.chain.len() >= MAX_HOPS {
            return Err(Rejection::Invalid(format!(
                "lead '{lead}' already has {MAX_HOPS} hops (the most a chain may have)"
            )));
        }
        self.st.active_partner(&from, &l.program)?;
        self.st.active_partner(&to, &l.program)?;
        let mut chain: Vec<String> = l.chain.iter().map(ToString::to_string).collect();
        chain.push(to);
        self.derived(
            Event::LeadOutcome {
                lead: lead.clone(),
                outcome: LeadOutcomeKind::HandedOff,
                owner: None,
                chain: chain.clone(),
            },
            None,
        );
        Ok(Box::new(move |s| {
            s.leads.update(&lead, |l| l.chain = chain.into_iter().map(CompactString::from).collect());
        }))
    }
}
