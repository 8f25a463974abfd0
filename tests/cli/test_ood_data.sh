#!/usr/bin/env bash
# The OOD data end to end: `data dyck` and `data arith` write token files
# that `data info` accepts, reproducibly from the seed, and that `eval` scores
# a tiny trained model on; bad parameters are usage errors. A SentencePiece
# vocabulary trained by `data convert --spm-vocab` encodes text losslessly,
# trains and evaluates a model, and files encoded with another model or
# tokenizer are refused with a message.
source "$(dirname "$0")/lib.sh"
cd "$tmp"

# ---------------------------------------------------------------- generators
gen() { "$bin" data "$@" >/dev/null 2>&1; }
gen dyck --output dyck.h5 --train 2000 --validation 300 --seed 5
check "data dyck exits 0" [ $? -eq 0 ]
gen arith --output arith.h5 --train 2000 --validation 300 --seed 5 --max-steps 4
check "data arith exits 0" [ $? -eq 0 ]
for set in dyck arith; do
    "$bin" data info $set.h5 >$set.info 2>&1
    check "data info accepts the $set file" [ $? -eq 0 ]
    check "... its checksums verify" contains $set.info "checksums: *OK"
    check "... its domain is $set" contains $set.info "domain: *$set$"
    check "... the source records generator and seed" contains $set.info "source: *thinkscale $set generator, seed 5, "
done
check "... and the generator's parameters" contains arith.info "max_value=100 min_steps=1 max_steps=4 max_factor=9 ops=+-\*"
crcs() { grep -E '^(train|validation):' "$1"; }
gen dyck --output dyck_again.h5 --train 2000 --validation 300 --seed 5
"$bin" data info dyck_again.h5 >dyck_again.info 2>&1
check "the same seed gives the same tokens (sizes and checksums)" [ "$(crcs dyck.info)" = "$(crcs dyck_again.info)" ]
gen dyck --output dyck_other.h5 --train 2000 --validation 300 --seed 6
"$bin" data info dyck_other.h5 >dyck_other.info 2>&1
check "another seed gives other tokens" [ "$(crcs dyck.info)" != "$(crcs dyck_other.info)" ]
py - <<'PY'
import h5py, sys
text = bytes(h5py.File("arith.h5", "r")["validation/tokens"][...].astype("u1")).decode()
records = text.split("Question: ")[1:]
ok = len(records) == 300 and all("\nAnswer: " in r and r.endswith("\n") for r in records)
sys.exit(0 if ok else 1)
PY
check "the validation split holds 300 \"Question: ...\\nAnswer: ...\\n\" records" [ $? -eq 0 ]

usage_error() { # usage_error PATTERN ARGS...: exit status 2 and PATTERN in the message
    local pattern=$1
    shift
    "$bin" data "$@" >usage.log 2>&1
    local status=$?
    [ $status -eq 2 ] || { echo "  exit status $status, not 2"; cat usage.log; return 1; }
    grep -q -- "$pattern" usage.log || { echo "  expected '$pattern' in:"; cat usage.log; return 1; }
}
check "an unknown option is refused" usage_error "unknown option --depth" dyck --output x.h5 --depth 3
check "a max-depth of 0 is refused" usage_error "max-depth must be" dyck --output x.h5 --max-depth 0
check "max-length below min-length is refused" usage_error "max-length must be from min-length" \
    dyck --output x.h5 --min-length 10 --max-length 5
check "a non-number is refused" usage_error "--kinds must be an integer" dyck --output x.h5 --kinds four
check "more bracket kinds than four are refused" usage_error "--kinds must be an integer from 1 to 4" \
    dyck --output x.h5 --kinds 5
check "an operation other than + - * is refused" usage_error "ops must be some of" arith --output x.h5 --ops "+/"
check "min-steps above max-steps is refused" usage_error "min-steps must be" arith --output x.h5 --min-steps 5 --max-steps 2
check "zero training records are refused" usage_error "--train must be an integer from 1" arith --output x.h5 --train 0
check "a missing --output is refused" usage_error "--output is required" arith --seed 3
check "no file is left by refused commands" [ ! -e x.h5 ]
cp dyck.h5 dyck_before.h5
check "an existing output is kept without --force" fails_with exists.log "already exists: pass --force" \
    "$bin" data dyck --output dyck.h5 --seed 9
check "... unchanged" cmp -s dyck.h5 dyck_before.h5

# ---------------------------------------------------------------- evaluation
make_license_corpus "$tmp/corpus.h5"
tiny_train 1 "$bin" "$tmp/run" --set train.steps=10 >train.log 2>&1
check "a tiny model trains on text" [ $? -eq 0 ]
mpirun -np 2 "$bin" eval --run "$tmp/run" --data "$tmp/dyck.h5,$tmp/arith.h5" --windows 8 \
    --output eval.h5 >eval.log 2>&1
check "eval scores it on both generated sets" [ $? -eq 0 ]
check "... a row for dyck" contains eval.log "^dyck "
check "... a row for arith" contains eval.log "^arith "

# ---------------------------------------------------------------- answer-only scoring
check "the generated file carries an answer mask with a checksum" contains dyck.info "answer_mask, crc32"
# Masked copies of the licence corpus, written as docs/data-format.md says:
# a random mask M, its complement, and all ones. Answer-only losses must
# combine to the whole-text loss, and all ones must equal it.
py - "$tmp" <<'PY'
import sys, h5py, numpy as np, zlib
tmp = sys.argv[1]
src = h5py.File(f"{tmp}/corpus.h5", "r")
rng = np.random.default_rng(1)
masks = {s: (rng.random(len(src[s + "/tokens"])) < 0.3).astype("u1") for s in ("train", "validation")}
def write(name, mask_of, crc_of=lambda m: zlib.crc32(m.tobytes()), splits=("train", "validation")):
    with h5py.File(f"{tmp}/{name}.h5", "w") as f:
        for k, v in src.attrs.items():
            f.attrs[k] = v
        f.attrs["domain"] = name
        for s in ("train", "validation"):
            t = src[s + "/tokens"][...]
            d = f.create_dataset(s + "/tokens", data=t)
            d.attrs["n_tokens"] = len(t)
            d.attrs["crc32"] = np.uint32(zlib.crc32(t.astype("<i4").tobytes()))
            if s in splits:
                m = mask_of(s).astype("u1")
                d = f.create_dataset(s + "/answer_mask", data=m)
                d.attrs["n_tokens"] = len(m)
                d.attrs["crc32"] = np.uint32(crc_of(m))
write("masked", lambda s: masks[s])
write("complement", lambda s: 1 - masks[s])
write("ones", lambda s: np.ones_like(masks[s]))
write("badcrc", lambda s: masks[s], crc_of=lambda m: zlib.crc32(m.tobytes()) ^ 1)
write("badvalue", lambda s: masks[s] * 2)
write("onesplit", lambda s: masks[s], splits=("train",))
PY
for f in masked complement ones; do
    "$bin" data info $f.h5 >$f.info 2>&1
    check "data info accepts a masked file made with h5py ($f)" contains $f.info "checksums: *OK"
done
check "a mask that does not match its checksum is refused" \
    fails_with badcrc.log "/train/answer_mask does not match its checksum" "$bin" data info badcrc.h5
check "a mask value other than 0 or 1 is refused" fails_with badvalue.log "is neither 0 nor 1" "$bin" data info badvalue.h5
check "a mask in one split only is refused" \
    fails_with onesplit.log "/train/answer_mask exists but /validation/answer_mask does not" "$bin" data info onesplit.h5
mpirun -np 2 "$bin" eval --run "$tmp/run" --data "$tmp/masked.h5,$tmp/complement.h5,$tmp/ones.h5,$tmp/corpus.h5" \
    --windows 16 --output masks.h5 >masks.log 2>&1
check "eval scores masked sets" [ $? -eq 0 ]
check "... printing an answer-only row" contains masks.log "^masked/answer "
py - <<'PY'
import sys, h5py
f = h5py.File("masks.h5", "r")
a = {k: dict(f[f"sets/{k}/default"].attrs) for k in ("masked", "complement", "ones", "licenses")}
whole = a["licenses"]["loss"]
na, nc = a["masked"]["answer_tokens"], a["complement"]["answer_tokens"]
combined = (a["masked"]["answer_loss"] * na + a["complement"]["answer_loss"] * nc) / (na + nc)
print(f"whole {whole:.6f}, mask {a['masked']['answer_loss']:.4f} ({na}), complement "
      f"{a['complement']['answer_loss']:.4f} ({nc}), combined {combined:.6f}, ones {a['ones']['answer_loss']:.6f}")
ok = na + nc == a["licenses"]["tokens"] and 0 < na < nc
ok &= abs(combined - whole) < 1e-5 * whole and abs(a["ones"]["answer_loss"] - whole) < 1e-5 * whole
ok &= abs(a["masked"]["loss"] - whole) < 1e-5 * whole  # the whole-text row is unchanged by a mask
ok &= "answer_loss" not in a["licenses"]                # a set without a mask has no answer row
sys.exit(0 if ok else 1)
PY
check "answer-only losses of a mask and its complement combine to the whole-text loss; all ones equal it" [ $? -eq 0 ]

# ---------------------------------------------------------------- SentencePiece
cat /usr/share/common-licenses/* >licenses.txt
for i in $(seq 1 1500); do echo "int f$i(int x) { return x * $i + $((i % 7)); }"; done >code.c
"$bin" data convert --input licenses.txt --output whole.h5 --name whole --val-fraction 0 \
    --spm-model spm.model --spm-vocab 400 >spm.log 2>&1
check "data convert trains a 400-piece SentencePiece model" [ $? -eq 0 ]
check "... and writes the model" [ -s spm.model ]
"$bin" data info whole.h5 >whole.info 2>&1
check "... the file has vocabulary 401 (pieces + newline)" contains whole.info "vocab_size: *401$"
check "... and names the model's hash as its tokenizer" contains whole.info "tokenizer: *sentencepiece:[0-9a-f]\{16\}$"
check "... and the model's path in its source" contains whole.info "sentencepiece model $tmp/spm.model"
py - "$tmp" <<'PY'
# Lossless: the ids, split at the newline id, decode (spm_decode) to the text.
import h5py, subprocess, sys
tmp = sys.argv[1]
f = h5py.File(f"{tmp}/whole.h5", "r")
ids, newline = f["train/tokens"][...], int(f.attrs["vocab_size"]) - 1
lines, line = [], []
for t in ids:
    if t == newline:
        lines.append(" ".join(map(str, line)))
        line = []
    else:
        line.append(int(t))
assert not line
decoded = subprocess.run(["spm_decode", f"--model={tmp}/spm.model", "--input_format=id"],
                         input="\n".join(lines) + "\n", capture_output=True, text=True, check=True).stdout
text = open(f"{tmp}/licenses.txt").read()
print(f"{len(ids)} tokens for {len(text.encode())} bytes")
print("decoded text equals the input:", decoded == text)
sys.exit(0 if decoded == text and len(ids) < len(text.encode()) else 1)
PY
check "... encoding is lossless and shorter than bytes" [ $? -eq 0 ]
"$bin" data convert --input licenses.txt --output again.h5 --name whole --val-fraction 0 \
    --spm-model spm_again.model --spm-vocab 400 >/dev/null 2>&1
check "training again with the same seed gives the same model" cmp -s spm.model spm_again.model
"$bin" data convert --input licenses.txt --val-fraction 0 --spm-model spm_only.model --spm-vocab 400 \
    >spm_only.log 2>&1
check "without --output only the model is trained, the same" cmp -s spm.model spm_only.model

"$bin" data convert --input licenses.txt --output spm_corpus.h5 --name licenses \
    --spm-model spm_corpus.model --spm-vocab 400 >/dev/null 2>&1
check "a corpus with a validation split converts with its own model" [ $? -eq 0 ]
"$bin" data info spm_corpus.h5 >spm_corpus.info 2>&1
"$bin" data convert --input code.c --output spm_code.h5 --name code --val-fraction 0.2 \
    --spm-model spm_corpus.model >/dev/null 2>&1
check "an evaluation set converts with the same model" [ $? -eq 0 ]
"$bin" data convert --input code.c --input licenses.txt --output spm_code_other.h5 --name code \
    --val-fraction 0.2 --spm-model spm_other.model --spm-vocab 400 >/dev/null 2>&1
check "... and with a model of another text, same vocabulary size" [ $? -eq 0 ]
"$bin" data dyck --output spm_dyck_other.h5 --train 300 --validation 60 --spm-model spm_other.model \
    >/dev/null 2>&1
tiny_train 1 "$bin" "$tmp/spm_run" --set train.steps=10 --set data.train="$tmp/spm_corpus.h5" \
    --set data.eval="$tmp/spm_code.h5" >spm_train.log 2>&1
check "a tiny model trains on subword tokens, evaluating a set of the same model" [ $? -eq 0 ]
check "... with the vocabulary of the model" contains spm_run/report.yaml "401"
mpirun -np 1 "$bin" eval --run "$tmp/spm_run" --data "$tmp/spm_code.h5" --windows 8 --output spm_eval.h5 \
    >spm_eval.log 2>&1
check "eval scores it on a set of the same model" [ $? -eq 0 ]
check "eval refuses a set of another SentencePiece model, naming the problem" \
    fails_with spm_mismatch.log "was tokenized by 'sentencepiece:" \
    mpirun -np 1 "$bin" eval --run "$tmp/spm_run" --data "$tmp/spm_code_other.h5" --output x.h5
check "... and a byte-level set" fails_with spm_bytes.log "vocab" \
    mpirun -np 1 "$bin" eval --run "$tmp/spm_run" --data "$tmp/dyck.h5" --output x.h5
check "training refuses an evaluation set of another model" fails_with spm_train_mismatch.log \
    "spm_code_other.h5 was tokenized by" tiny_train 1 "$bin" "$tmp/spm_run2" --set train.steps=2 \
    --set data.train="$tmp/spm_corpus.h5" --set data.eval="$tmp/spm_code_other.h5"

# ---------------------------------------------------------------- generated sets in subwords
# `data dyck|arith --spm-model`: the same records as the byte set, encoded with the model, a
# token boundary forced where each answer starts, so the answer mask stays exact.
for set in dyck arith; do
    "$bin" data $set --output spm_$set.h5 --train 300 --validation 60 --seed 5 \
        --spm-model spm_corpus.model >spm_$set.log 2>&1
    check "data $set --spm-model exits 0" [ $? -eq 0 ]
    "$bin" data $set --output byte_$set.h5 --train 300 --validation 60 --seed 5 >/dev/null 2>&1
    "$bin" data info spm_$set.h5 >spm_$set.info 2>&1
    check "... data info accepts it" contains spm_$set.info "checksums: *OK"
    check "... its tokenizer is the model's, vocabulary pieces + newline" \
        [ "$(grep -E '^(tokenizer|vocab_size):' spm_$set.info)" = "$(grep -E '^(tokenizer|vocab_size):' spm_corpus.info)" ]
    check "... its source names the forced answer boundary" contains spm_$set.info "answer starts a new token"
    "$bin" data $set --output spm_${set}_again.h5 --train 300 --validation 60 --seed 5 \
        --spm-model spm_corpus.model >/dev/null 2>&1
    "$bin" data info spm_${set}_again.h5 >spm_${set}_again.info 2>&1
    check "... the same seed gives the same tokens and masks" [ "$(crcs spm_$set.info)" = "$(crcs spm_${set}_again.info)" ]
done
py - "$tmp" <<'PY'
# Every run of equal mask values (a question part, an answer part) of the subword file decodes
# (spm_decode, one call) to exactly the same run of the byte file: record by record the text is
# the byte set's, and every answer-masked span is exactly its record's answer and newline.
import h5py, subprocess, sys
import numpy as np
tmp = sys.argv[1]
def runs(tokens, mask):
    cut = np.flatnonzero(np.diff(mask.astype(int))) + 1
    return [(int(m[0]), t) for t, m in zip(np.split(tokens, cut), np.split(mask, cut))]
for name in ("dyck", "arith"):
    spm, byte = h5py.File(f"{tmp}/spm_{name}.h5", "r"), h5py.File(f"{tmp}/byte_{name}.h5", "r")
    newline = int(spm.attrs["vocab_size"]) - 1
    for split in ("train", "validation"):
        s_runs = runs(spm[split + "/tokens"][...], spm[split + "/answer_mask"][...])
        b_runs = runs(byte[split + "/tokens"][...], byte[split + "/answer_mask"][...])
        records = 300 if split == "train" else 60
        assert len(s_runs) == len(b_runs) == 2 * records, (len(s_runs), len(b_runs))
        lines, where = [], []  # every line of every run, for one spm_decode call
        for r, (_, ids) in enumerate(s_runs):
            line = []
            for t in list(ids) + [None]:
                if t is None or t == newline:
                    if t is not None or line:
                        lines.append(" ".join(map(str, line)))
                        where.append((r, t is not None))
                    line = []
                else:
                    line.append(int(t))
        out = subprocess.run(["spm_decode", f"--model={tmp}/spm_corpus.model", "--input_format=id"],
                             input="\n".join(lines) + "\n", capture_output=True, text=True,
                             check=True).stdout.split("\n")
        decoded = [""] * len(s_runs)
        for (r, ended), text in zip(where, out):
            decoded[r] += text + ("\n" if ended else "")
        for r, ((sm, _), (bm, b)) in enumerate(zip(s_runs, b_runs)):
            text = bytes(b.astype("u1")).decode()
            assert sm == bm == r % 2, (r, sm, bm)
            assert decoded[r] == text, (name, split, r, decoded[r], text)
            if r % 2:  # the answer: what follows "Answer: ", up to its newline
                assert text.endswith("\n") and "\n" not in text[:-1], text
            else:
                assert text.startswith("Question: ") and text.endswith("\nAnswer: "), text
        n_spm, n_byte = len(spm[split + "/tokens"]), len(byte[split + "/tokens"])
        print(f"{name} {split}: {records} records, {n_spm} subword tokens for {n_byte} bytes")
PY
check "the subword sets decode record by record to the byte sets, each answer-masked span to its answer" [ $? -eq 0 ]
mpirun -np 1 "$bin" eval --run "$tmp/spm_run" --data "$tmp/spm_dyck.h5,$tmp/spm_arith.h5" --windows 8 \
    --output spm_qa_eval.h5 >spm_qa_eval.log 2>&1
check "eval scores a subword model on the subword sets of its model" [ $? -eq 0 ]
check "... with answer-only rows" contains spm_qa_eval.log "^dyck/answer "
check "eval refuses a subword set of another model" fails_with spm_qa_other.log "was tokenized by 'sentencepiece:" \
    mpirun -np 1 "$bin" eval --run "$tmp/spm_run" --data "$tmp/spm_dyck_other.h5" --output x.h5
check "a missing model is an error naming it" fails_with spm_qa_missing.log "nope.model: cannot read" \
    "$bin" data dyck --output x.h5 --spm-model nope.model
check "a file that is no model is an error" fails_with spm_qa_bad.log "not a usable SentencePiece model" \
    "$bin" data arith --output x.h5 --spm-model code.c
cp spm_dyck.h5 spm_dyck_before.h5
check "an existing set is kept without --force" fails_with spm_qa_exists.log "already exists" \
    "$bin" data dyck --output spm_dyck.h5 --spm-model spm_corpus.model
check "... unchanged" cmp -s spm_dyck.h5 spm_dyck_before.h5

check "a vocabulary below the byte pieces is a usage error" usage_error "--spm-vocab must be an integer from 300" \
    convert --input code.c --output x.h5 --name x --spm-model y.model --spm-vocab 10
check "sentencepiece without a model is a usage error" usage_error "needs --spm-model" \
    convert --input code.c --output x.h5 --name x --tokenizer sentencepiece
check "a missing model file is reported" fails_with nomodel.log "nope.model: cannot read" \
    "$bin" data convert --input code.c --output x.h5 --name x --spm-model nope.model
check "a file that is no model is reported" fails_with notmodel.log "not a usable SentencePiece model" \
    "$bin" data convert --input code.c --output x.h5 --name x --spm-model code.c
check "an existing model is not replaced without --force" fails_with model_exists.log "spm.model already exists" \
    "$bin" data convert --input code.c --output x.h5 --name x --spm-model spm.model --spm-vocab 400
check "... and is unchanged" cmp -s spm.model spm_again.model
check "an existing output is refused before a vocabulary is trained" fails_with late_output.log "spm_dyck.h5' already exists" \
    "$bin" data convert --input licenses.txt --output spm_dyck.h5 --name x --spm-model late.model --spm-vocab 400
check "... so no model is left behind" [ ! -e late.model ]
check "no output (nor a temporary file) is left by failed conversions and generations" [ ! -e x.h5 ] && [ -z "$(ls x.h5.tmp.* 2>/dev/null)" ]
finish
