//! Deciding the facts about programs, partners and agents: publication and amendment of
//! a program's rules, enrolment and suspension of partners, authorisation and revocation
//! of agents; and the program's open mandate (its standing authorisation), reissued
//! whenever its rules or payees change.

use chrono::{DateTime, Utc};
use settle_mandates::types::{Constraint, OpenMandate, VCT_OPEN_MANDATE, derive_salt};

use super::{Apply, Decider, ts};
use crate::decision::{Rejection, ToSign};
use crate::ids::open_mandate_id;
use crate::model::{Event, MAX_PARTNERS_PER_PROGRAM, PartnerRole, ProgramSpec, check_id, check_text};
use crate::state::{Agent, Partner, Program, RuleVersion};

impl Decider<'_> {
    /// `program_published`: valid rules under a new program id; its first open mandate.
    pub(super) fn program_published(&mut self, spec: ProgramSpec) -> Result<Apply, Rejection> {
        crate::rules::validate(&spec)?;
        if self.st.programs.contains_key(&spec.program) {
            return Err(Rejection::Conflict(format!("program '{}' already exists", spec.program)));
        }
        let om = self.open_mandate(&spec, 1, Vec::new());
        let id = spec.program.clone();
        let program = Program {
            versions: vec![RuleVersion { version: 1, effective_from: spec.valid_from.min(self.env.at), spec }],
            open_mandate: om,
        };
        Ok(Box::new(move |s| {
            s.programs.insert(id, program);
        }))
    }

    /// `program_amended`: valid rules, same currency, from no earlier than the rules they
    /// replace; a new rule version and open mandate.
    pub(super) fn program_amended(
        &mut self,
        spec: ProgramSpec,
        effective_from: DateTime<Utc>,
    ) -> Result<Apply, Rejection> {
        crate::rules::validate(&spec)?;
        let p = self.st.program(&spec.program)?;
        let latest = p.latest();
        if latest.spec.currency != spec.currency {
            return Err(Rejection::Invalid("an amendment cannot change the program currency".into()));
        }
        if effective_from < latest.effective_from {
            return Err(Rejection::Invalid("an amendment cannot take effect before the rules it replaces".into()));
        }
        let version = latest.version + 1;
        let payees = self.payees(&spec.program, None, None);
        let om = self.open_mandate(&spec, version, payees);
        let id = spec.program.clone();
        Ok(Box::new(move |s| {
            let p = s.programs.get_mut(&id).unwrap_or_else(|| unreachable!());
            p.versions.push(RuleVersion { version, effective_from, spec });
            p.open_mandate = om;
        }))
    }

    /// `partner_enrolled`: a new partner of a program with room for it; the program's
    /// open mandate, reissued to pay it too.
    pub(super) fn partner_enrolled(
        &mut self,
        partner: String,
        program: String,
        name: String,
        role: PartnerRole,
    ) -> Result<Apply, Rejection> {
        check_id("partner", &partner)?;
        check_text("partner name", &name)?;
        let p = self.st.program(&program)?;
        if self.st.partners.values().filter(|x| x.program == program).count() >= MAX_PARTNERS_PER_PROGRAM {
            return Err(Rejection::Invalid(format!(
                "program '{program}' already has {MAX_PARTNERS_PER_PROGRAM} partners (the most a program may have)"
            )));
        }
        if self.st.partners.contains_key(&partner) {
            return Err(Rejection::Conflict(format!("partner '{partner}' is already enrolled")));
        }
        let rv = p.latest().clone();
        let payees = self.payees(&program, Some(&partner), None);
        let om = self.open_mandate(&rv.spec, rv.version, payees);
        Ok(Box::new(move |s| {
            s.partners
                .insert(partner, Partner { program: program.clone(), name, role, suspended: false, instrument: None });
            if let Some(p) = s.programs.get_mut(&program) {
                p.open_mandate = om;
            }
        }))
    }

    /// `partner_suspended`: no new leads, hand-offs or mandates for it; the program's open
    /// mandate, reissued without it.
    pub(super) fn partner_suspended(&mut self, partner: String, reason: String) -> Result<Apply, Rejection> {
        check_text("reason", &reason)?;
        let p = self.st.partners.get(&partner).ok_or_else(|| Rejection::NotFound(format!("partner '{partner}'")))?;
        if p.suspended {
            return Err(Rejection::Conflict(format!("partner '{partner}' is already suspended")));
        }
        let program = p.program.clone();
        let rv = self.st.program(&program)?.latest().clone();
        let payees = self.payees(&program, None, Some(&partner));
        let om = self.open_mandate(&rv.spec, rv.version, payees);
        Ok(Box::new(move |s| {
            if let Some(p) = s.partners.get_mut(&partner) {
                p.suspended = true;
            }
            if let Some(p) = s.programs.get_mut(&program) {
                p.open_mandate = om;
            }
        }))
    }

    /// `agent_authorised`: a new agent of a known partner, with a period, a scope and a
    /// usable public key if it brings one.
    pub(super) fn agent_authorised(&mut self, agent: String, grant: Agent) -> Result<Apply, Rejection> {
        check_id("agent", &agent)?;
        if !self.st.partners.contains_key(&grant.partner) {
            return Err(Rejection::NotFound(format!("partner '{}'", grant.partner)));
        }
        if self.st.agents.contains_key(&agent) {
            return Err(Rejection::Conflict(format!("agent '{agent}' already exists")));
        }
        if grant.expires_at <= grant.not_before {
            return Err(Rejection::Invalid("agent expires_at must be after not_before".into()));
        }
        if grant.scopes.is_empty() {
            return Err(Rejection::Invalid("an agent needs at least one scope".into()));
        }
        if let Some(k) = &grant.public_key {
            k.verifying_key().map_err(|e| Rejection::Invalid(format!("agent public key: {e}")))?;
        }
        Ok(Box::new(move |s| {
            s.agents.insert(agent, grant);
        }))
    }

    /// `agent_revoked`: an agent not yet revoked.
    pub(super) fn agent_revoked(&mut self, agent: String) -> Result<Apply, Rejection> {
        let a = self.st.agents.get(&agent).ok_or_else(|| Rejection::NotFound(format!("agent '{agent}'")))?;
        if a.revoked {
            return Err(Rejection::Conflict(format!("agent '{agent}' is already revoked")));
        }
        Ok(Box::new(move |s| {
            if let Some(a) = s.agents.get_mut(&agent) {
                a.revoked = true;
            }
        }))
    }

    /// Issues the open mandate of `spec`'s program at rule version `version`, paying
    /// `payees`: its standing authorisation. Returns its id.
    fn open_mandate(&mut self, spec: &ProgramSpec, version: u32, payees: Vec<String>) -> String {
        let id = open_mandate_id(&spec.program, self.seq);
        let mut constraints = vec![Constraint::AllowedPayees { payees }];
        if let Some(r) = &spec.payment_range {
            constraints.push(Constraint::AmountRange { currency: spec.currency, max: r.max, min: Some(r.min) });
        }
        if let Some(b) = &spec.budget {
            constraints.push(Constraint::Budget { max: b.max, currency: spec.currency, period: "month".into() });
        }
        constraints
            .push(Constraint::ExecutionDate { not_before: ts(spec.valid_from), not_after: spec.valid_until.map(ts) });
        let om = OpenMandate {
            vct: VCT_OPEN_MANDATE.into(),
            mandate_id: id.clone(),
            iss: self.cfg.vendor.clone(),
            iat: ts(self.env.at),
            program: spec.program.clone(),
            rule_version: version,
            constraints,
            salt: derive_salt(&self.cfg.salt_secret, &id),
        };
        self.derived(
            Event::OpenMandateIssued { mandate_id: id.clone(), mandate: String::new() },
            Some(ToSign::Open(om)),
        );
        id
    }

    /// The payees of `program`'s open mandate: its partners not suspended, with `plus`
    /// and without `minus`, in id order.
    fn payees(&self, program: &str, plus: Option<&str>, minus: Option<&str>) -> Vec<String> {
        let mut v: Vec<String> = self
            .st
            .partners
            .iter()
            .filter(|(id, p)| p.program == program && !p.suspended && Some(id.as_str()) != minus)
            .map(|(id, _)| id.clone())
            .collect();
        if let Some(p) = plus {
            v.push(p.to_owned());
            v.sort();
        }
        v
    }
}
