//! Selector text to an expression: a lexer, then a recursive-descent
//! parser whose recursion is bounded by [`MAX_DEPTH`] and whose output by
//! [`MAX_TERMS`]; the text itself is bounded by [`MAX_LENGTH`] before it
//! is read.

use std::collections::BTreeMap;

use super::like::LikePattern;
use super::{Cmp, Expr, SelectorError, Value, MAX_DEPTH, MAX_LENGTH, MAX_LIKE_PATTERN, MAX_TERMS};

/// Parses `text`: its expression and the identifiers it reads (sorted,
/// distinct; [`Expr::Ident`] indexes them).
pub(super) fn parse(text: &str) -> Result<(Expr, Vec<String>), SelectorError> {
    if text.len() > MAX_LENGTH {
        return Err(SelectorError {
            position: 0,
            message: format!(
                "the selector has {} bytes, more than {MAX_LENGTH} (the limit)",
                text.len()
            ),
        });
    }
    let tokens = lex(text)?;
    let mut p = Parser {
        tokens,
        at: 0,
        depth: 0,
        terms: 0,
        names: BTreeMap::new(),
    };
    let mut expr = p.or()?;
    if !matches!(p.peek(), Tok::End) {
        return Err(p.error("unexpected text after the end of the expression"));
    }
    // Identifiers were numbered as met; renumber them in sorted order.
    let mut identifiers = Vec::with_capacity(p.names.len());
    let mut order = vec![0; p.names.len()];
    for (name, first_seen) in p.names {
        order[first_seen] = identifiers.len();
        identifiers.push(name);
    }
    renumber(&mut expr, &order);
    Ok((expr, identifiers))
}

/// Replaces each identifier index `i` with `order[i]` (recursion as deep as
/// the expression, which parsing bounded).
fn renumber(e: &mut Expr, order: &[usize]) {
    match e {
        Expr::Ident(i) => *i = order[*i],
        Expr::Lit(_) | Expr::Null => {}
        Expr::Not(a)
        | Expr::Neg(a)
        | Expr::IsNull(_, a)
        | Expr::Like(_, a, _)
        | Expr::In(_, a, _) => renumber(a, order),
        Expr::And(items) | Expr::Or(items) => items.iter_mut().for_each(|i| renumber(i, order)),
        Expr::Cmp(_, a, b) => {
            renumber(a, order);
            renumber(b, order);
        }
        Expr::Arith(first, rest) => {
            renumber(first, order);
            rest.iter_mut().for_each(|(_, e)| renumber(e, order));
        }
        Expr::Between(_, a, lo, hi) => {
            renumber(a, order);
            renumber(lo, order);
            renumber(hi, order);
        }
    }
}

/// A token.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// An identifier or keyword (keywords matched case-insensitively).
    Word(String),
    /// A string literal.
    Str(String),
    /// An exact number.
    Int(i64),
    /// An approximate number.
    Float(f64),
    /// An operator or parenthesis.
    Op(&'static str),
    /// The end of the text.
    End,
}

/// Splits selector text into tokens, each with its position.
fn lex(text: &str) -> Result<Vec<(Tok, usize)>, SelectorError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |position, message: &str| SelectorError {
        position,
        message: message.to_string(),
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(err(start, "unterminated string literal")),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            out.push((Tok::Str(s), start));
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                // An exponent may carry a sign: 1E-3.
                if matches!(chars[i], 'e' | 'E') && matches!(chars.get(i + 1), Some('+' | '-')) {
                    i += 1;
                }
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let trimmed = word.trim_end_matches(['l', 'L']);
            let tok = if let Ok(n) = trimmed.parse::<i64>() {
                Tok::Int(n)
            } else if let Some(hex) = trimmed
                .strip_prefix("0x")
                .or_else(|| trimmed.strip_prefix("0X"))
            {
                i64::from_str_radix(hex, 16)
                    .map(Tok::Int)
                    .map_err(|_| err(start, "bad hexadecimal number"))?
            } else {
                let f = word.trim_end_matches(['f', 'F', 'd', 'D']);
                f.parse::<f64>()
                    .map(Tok::Float)
                    .map_err(|_| err(start, "bad number"))?
            };
            out.push((tok, start));
            continue;
        }
        if c.is_alphabetic() || c == '_' || c == '$' {
            while i < chars.len()
                && (chars[i].is_alphanumeric()
                    || chars[i] == '_'
                    || chars[i] == '$'
                    || chars[i] == '.')
            {
                i += 1;
            }
            out.push((Tok::Word(chars[start..i].iter().collect()), start));
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let op = match two.as_str() {
            "<>" => Some("<>"),
            "<=" => Some("<="),
            ">=" => Some(">="),
            _ => None,
        };
        if let Some(op) = op {
            out.push((Tok::Op(op), start));
            i += 2;
            continue;
        }
        let op = match c {
            '=' => "=",
            '<' => "<",
            '>' => ">",
            '+' => "+",
            '-' => "-",
            '*' => "*",
            '/' => "/",
            '(' => "(",
            ')' => ")",
            ',' => ",",
            _ => return Err(err(start, &format!("unexpected character '{c}'"))),
        };
        out.push((Tok::Op(op), start));
        i += 1;
    }
    out.push((Tok::End, chars.len()));
    Ok(out)
}

/// A recursive-descent parser over the tokens.
struct Parser {
    /// The tokens and their positions.
    tokens: Vec<(Tok, usize)>,
    /// The next token.
    at: usize,
    /// Nesting levels open (parentheses, `NOT`, unary signs): the parser's
    /// recursion, and the expression's depth, follow it.
    depth: usize,
    /// Terms made so far.
    terms: usize,
    /// Identifiers met, each with its number in order of first use.
    names: BTreeMap<String, usize>,
}

impl Parser {
    /// The next token.
    fn peek(&self) -> &Tok {
        &self.tokens[self.at.min(self.tokens.len() - 1)].0
    }

    /// An error at the next token.
    fn error(&self, message: &str) -> SelectorError {
        SelectorError {
            position: self.tokens[self.at.min(self.tokens.len() - 1)].1,
            message: message.to_string(),
        }
    }

    /// Takes the next token.
    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        self.at += 1;
        t
    }

    /// Counts `n` terms, failing past [`MAX_TERMS`].
    fn count(&mut self, n: usize) -> Result<(), SelectorError> {
        self.terms += n;
        if self.terms > MAX_TERMS {
            return Err(self.error(&format!(
                "the selector has more than {MAX_TERMS} terms (the limit)"
            )));
        }
        Ok(())
    }

    /// `e` counted as one term.
    fn term(&mut self, e: Expr) -> Result<Expr, SelectorError> {
        self.count(1)?;
        Ok(e)
    }

    /// Opens a nesting level, failing past [`MAX_DEPTH`]; [`Parser::close`]
    /// closes it.
    fn open(&mut self) -> Result<(), SelectorError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(&format!(
                "the selector nests deeper than {MAX_DEPTH} levels (the limit)"
            )));
        }
        Ok(())
    }

    /// Closes a nesting level.
    fn close(&mut self) {
        self.depth -= 1;
    }

    /// Whether the next token is keyword `kw` (taken if so).
    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Tok::Word(w) if w.eq_ignore_ascii_case(kw)) {
            self.at += 1;
            return true;
        }
        false
    }

    /// Takes a string literal, or fails with `message` at the next token.
    fn string(&mut self, message: &str) -> Result<String, SelectorError> {
        match self.peek() {
            Tok::Str(s) => {
                let s = s.clone();
                self.at += 1;
                Ok(s)
            }
            _ => Err(self.error(message)),
        }
    }

    /// Whether the next token is operator `op` (taken if so).
    fn op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Tok::Op(o) if *o == op) {
            self.at += 1;
            return true;
        }
        false
    }

    /// `a OR b OR ...`.
    fn or(&mut self) -> Result<Expr, SelectorError> {
        let first = self.and()?;
        if !self.keyword("OR") {
            return Ok(first);
        }
        let mut items = vec![first];
        loop {
            items.push(self.and()?);
            self.count(1)?;
            if !self.keyword("OR") {
                return Ok(Expr::Or(items));
            }
        }
    }

    /// `a AND b AND ...`.
    fn and(&mut self) -> Result<Expr, SelectorError> {
        let first = self.not()?;
        if !self.keyword("AND") {
            return Ok(first);
        }
        let mut items = vec![first];
        loop {
            items.push(self.not()?);
            self.count(1)?;
            if !self.keyword("AND") {
                return Ok(Expr::And(items));
            }
        }
    }

    /// `NOT e`.
    fn not(&mut self) -> Result<Expr, SelectorError> {
        if self.keyword("NOT") {
            self.open()?;
            let e = self.not()?;
            self.close();
            return self.term(Expr::Not(Box::new(e)));
        }
        self.comparison()
    }

    /// A comparison, or the other predicates.
    fn comparison(&mut self) -> Result<Expr, SelectorError> {
        let left = self.sum()?;
        let cmp = match self.peek() {
            Tok::Op("=") => Some(Cmp::Eq),
            Tok::Op("<>") => Some(Cmp::Ne),
            Tok::Op("<") => Some(Cmp::Lt),
            Tok::Op("<=") => Some(Cmp::Le),
            Tok::Op(">") => Some(Cmp::Gt),
            Tok::Op(">=") => Some(Cmp::Ge),
            _ => None,
        };
        if let Some(cmp) = cmp {
            self.at += 1;
            let right = self.sum()?;
            return self.term(Expr::Cmp(cmp, Box::new(left), Box::new(right)));
        }
        if self.keyword("IS") {
            let negated = self.keyword("NOT");
            if !self.keyword("NULL") {
                return Err(self.error("expected NULL after IS"));
            }
            return self.term(Expr::IsNull(negated, Box::new(left)));
        }
        let negated = self.keyword("NOT");
        if self.keyword("BETWEEN") {
            let lo = self.sum()?;
            if !self.keyword("AND") {
                return Err(self.error("expected AND in BETWEEN"));
            }
            let hi = self.sum()?;
            return self.term(Expr::Between(
                negated,
                Box::new(left),
                Box::new(lo),
                Box::new(hi),
            ));
        }
        if self.keyword("LIKE") {
            let at = self.at;
            let pattern = self.string("expected a string pattern after LIKE")?;
            if pattern.chars().count() > MAX_LIKE_PATTERN {
                self.at = at;
                return Err(self.error(&format!(
                    "LIKE pattern longer than {MAX_LIKE_PATTERN} characters (the limit)"
                )));
            }
            let escape = if self.keyword("ESCAPE") {
                let at = self.at;
                let e = self.string("ESCAPE needs a one-character string")?;
                if e.chars().count() != 1 {
                    self.at = at;
                    return Err(self.error("ESCAPE needs a one-character string"));
                }
                e.chars().next()
            } else {
                None
            };
            let pattern = Box::new(LikePattern::new(&pattern, escape));
            return self.term(Expr::Like(negated, Box::new(left), pattern));
        }
        if self.keyword("IN") {
            if !self.op("(") {
                return Err(self.error("expected ( after IN"));
            }
            let mut items = Vec::new();
            loop {
                items.push(self.string("IN takes a list of string literals")?);
                self.count(1)?;
                if self.op(")") {
                    break;
                }
                if !self.op(",") {
                    return Err(self.error("expected , or ) in IN list"));
                }
            }
            return self.term(Expr::In(negated, Box::new(left), items));
        }
        if negated {
            return Err(self.error("expected BETWEEN, LIKE or IN after NOT"));
        }
        Ok(left)
    }

    /// `a + b - c ...`.
    fn sum(&mut self) -> Result<Expr, SelectorError> {
        self.chain(['+', '-'], Self::product)
    }

    /// `a * b / c ...`.
    fn product(&mut self) -> Result<Expr, SelectorError> {
        self.chain(['*', '/'], Self::unary)
    }

    /// Operands of `operand` joined by any of `ops`, left to right.
    fn chain(
        &mut self,
        ops: [char; 2],
        operand: fn(&mut Self) -> Result<Expr, SelectorError>,
    ) -> Result<Expr, SelectorError> {
        let first = operand(self)?;
        let mut rest = Vec::new();
        loop {
            let op = match self.peek() {
                Tok::Op(o) => ops.into_iter().find(|c| o.len() == 1 && o.starts_with(*c)),
                _ => None,
            };
            let Some(op) = op else {
                break;
            };
            self.at += 1;
            rest.push((op, operand(self)?));
            self.count(1)?;
        }
        if rest.is_empty() {
            Ok(first)
        } else {
            Ok(Expr::Arith(Box::new(first), rest))
        }
    }

    /// `-e`, `+e`, or a primary.
    fn unary(&mut self) -> Result<Expr, SelectorError> {
        if self.op("-") {
            self.open()?;
            let e = self.unary()?;
            self.close();
            return match e {
                Expr::Lit(Value::Int(n)) => Ok(Expr::Lit(Value::Int(n.wrapping_neg()))),
                Expr::Lit(Value::Float(f)) => Ok(Expr::Lit(Value::Float(-f))),
                e => self.term(Expr::Neg(Box::new(e))),
            };
        }
        if self.op("+") {
            self.open()?;
            let e = self.unary();
            self.close();
            return e;
        }
        self.primary()
    }

    /// A literal, an identifier, or a parenthesised expression.
    fn primary(&mut self) -> Result<Expr, SelectorError> {
        match self.next() {
            Tok::Str(s) => self.term(Expr::Lit(Value::Str(s.into()))),
            Tok::Int(n) => self.term(Expr::Lit(Value::Int(n))),
            Tok::Float(f) => self.term(Expr::Lit(Value::Float(f))),
            Tok::Op("(") => {
                self.open()?;
                let e = self.or()?;
                self.close();
                if !self.op(")") {
                    return Err(self.error("expected )"));
                }
                Ok(e)
            }
            Tok::Word(w) => {
                let upper = w.to_ascii_uppercase();
                match upper.as_str() {
                    "TRUE" => self.term(Expr::Lit(Value::Bool(true))),
                    "FALSE" => self.term(Expr::Lit(Value::Bool(false))),
                    "NULL" => self.term(Expr::Null),
                    "AND" | "OR" | "NOT" | "BETWEEN" | "LIKE" | "IN" | "IS" | "ESCAPE" => {
                        self.at -= 1;
                        Err(self.error(&format!("unexpected keyword {upper}")))
                    }
                    _ => {
                        let next = self.names.len();
                        let index = *self.names.entry(w).or_insert(next);
                        self.term(Expr::Ident(index))
                    }
                }
            }
            Tok::End => {
                self.at -= 1;
                Err(self.error("unexpected end of selector"))
            }
            Tok::Op(op) => {
                self.at -= 1;
                Err(self.error(&format!("unexpected '{op}'")))
            }
        }
    }
}
