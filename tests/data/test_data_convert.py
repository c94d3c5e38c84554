"""Conversion: every real file converts and validates; tables with column mappings; errors located."""

from __future__ import annotations

import json

import pytest

from openft.data.convert import convert_file, guess_mapping, parse_mapping
from openft.data.validate import validate_file
from openft.errors import DataError, InvalidRequest
from tests.support.data import chat, write_jsonl


def read(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_sentiment_csv_to_classification_in_one_command(tmp_path, run_data, shared_data):
    out = tmp_path / "reviews.jsonl"
    code, stdout, _ = run_data("convert", shared_data / "sentiment" / "reviews.csv", out,
                               "--system", "Classify the sentiment of the review as positive or negative.")
    assert code == 0, stdout
    assert "columns: review -> user, sentiment -> assistant; ignored: source" in stdout
    assert "labels: positive 1205 (50.2%), negative 1195 (49.8%)" in stdout
    rows = read(out)
    assert len(rows) == 2400
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant"]
    assert rows[0]["messages"][2]["content"] in ("positive", "negative")
    code, stdout, _ = run_data("validate", out, "-m", "openft-tiny")
    assert code == 0, stdout
    assert "labels (the assistant answers look like labels)" in stdout and "epochs (auto): 3" in stdout


@pytest.mark.parametrize("name,labels", [("ar_lsat", {"A", "B", "C", "D", "E"}), ("conjnli", {"e", "c", "n"})])
def test_evals_files_convert_and_validate(tmp_path, shared_data, tiny_tokenizer, name, labels):
    out = tmp_path / f"{name}.jsonl"
    r = convert_file(shared_data / name / "examples.jsonl", out)
    assert r.input_format == "evals" and r.n_written == r.n_read > 100 and set(r.labels) == labels
    rows = read(out)
    src = read(shared_data / name / "examples.jsonl")
    assert rows[0]["messages"][:-1] == [{**m, "content": m["content"].replace("\ufeff", "")} for m in src[0]["input"]]
    assert rows[0]["messages"][-1] == {"role": "assistant", "content": src[0]["ideal"]}
    assert not any("\ufeff" in m["content"] for r_ in rows for m in r_["messages"])
    rep = validate_file(out, tokenizer=tiny_tokenizer, max_seq_len=2048)
    assert rep.ok, [str(e) for e in rep.errors]
    assert set(rep.stats["labels"]) == labels


def test_tables_with_mappings(tmp_path):
    import openpyxl
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [("Be brief.", f"Question {i}?", f"Answer {i}.") for i in range(12)]
    header = ("system_message", "user_content", "assistant_content")
    tsv = tmp_path / "t.tsv"
    tsv.write_text("\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(header)
    for r in rows:
        ws.append(r)
    wb.save(tmp_path / "t.xlsx")
    pq.write_table(pa.table({h: [r[i] for r in rows] for i, h in enumerate(header)}), tmp_path / "t.parquet")
    want = [{"messages": [{"role": "system", "content": s}, {"role": "user", "content": u},
                          {"role": "assistant", "content": a}]} for s, u, a in rows]
    for ext in ("tsv", "xlsx", "parquet"):
        r = convert_file(tmp_path / f"t.{ext}", tmp_path / f"{ext}.jsonl")
        assert r.mapping == {"system_message": "system", "user_content": "user", "assistant_content": "assistant"}
        assert read(tmp_path / f"{ext}.jsonl") == want, ext
    m = parse_mapping(["user_content=prompt", "assistant_content=completion"])
    convert_file(tmp_path / "t.xlsx", tmp_path / "pc.jsonl", mapping=m, to="prompt_completion")
    assert read(tmp_path / "pc.jsonl")[0] == {"prompt": "Question 0?", "completion": "Answer 0."}
    convert_file(tmp_path / "t.xlsx", tmp_path / "pc_chat.jsonl", mapping=m)  # default output: chat
    assert read(tmp_path / "pc_chat.jsonl")[0]["messages"] == want[0]["messages"][1:]
    assert validate_file(tmp_path / "pc.jsonl").format == "prompt_completion"


def test_csv_with_bom_numbers_and_label_column(tmp_path):
    p = tmp_path / "x.csv"
    p.write_bytes("\ufefftext;label\n".encode() + "".join(f"\ufeffitem {i};{i % 2}\n" for i in range(12)).encode())
    r = convert_file(p, tmp_path / "x.jsonl", system="Label 0 or 1.")
    assert r.mapping == {"text": "user", "label": "assistant"} and dict(r.labels) == {"0": 6, "1": 6}
    assert read(tmp_path / "x.jsonl")[1]["messages"] == [
        {"role": "system", "content": "Label 0 or 1."}, {"role": "user", "content": "item 1"},
        {"role": "assistant", "content": "1"}]


def test_table_errors_are_located(tmp_path, run_data):
    p = tmp_path / "x.csv"
    p.write_text("review,sentiment\ngood,positive\n,negative\n")
    with pytest.raises(DataError) as e:
        convert_file(p, tmp_path / "o.jsonl")
    assert str(e.value) == f"{p}:3 [review]: empty user cell" and e.value.code == "missing_content"
    assert not (tmp_path / "o.jsonl").exists()  # never half-written
    r = convert_file(p, tmp_path / "o.jsonl", skip_invalid=True)
    assert (r.n_written, r.n_skipped) == (1, 1)
    with pytest.raises(DataError, match=r"no column 'text'; the columns are: review, sentiment"):
        convert_file(p, tmp_path / "o.jsonl", mapping={"text": "user", "sentiment": "assistant"})
    with pytest.raises(InvalidRequest, match="COLUMN=ROLE"):
        parse_mapping(["review:user"])
    with pytest.raises(InvalidRequest, match="which columns hold the conversation"):
        guess_mapping(["a", "b"])
    code, out, err = run_data("convert", p, tmp_path / "o.jsonl", "--map", "review=bot")
    assert code == 1 and err.startswith("error: --map 'review=bot': expected COLUMN=ROLE") and not out


def test_jsonl_formats_convert(tmp_path):
    pref = {"input": {"messages": [{"role": "user", "content": "Hi"}]},
            "preferred_output": [{"role": "assistant", "content": "Hello!"}],
            "non_preferred_output": [{"role": "assistant", "content": "Go away."}]}
    write_jsonl(tmp_path / "p.jsonl", [pref])
    convert_file(tmp_path / "p.jsonl", tmp_path / "p_out.jsonl")
    assert read(tmp_path / "p_out.jsonl") == [{"messages": [{"role": "user", "content": "Hi"},
                                                            {"role": "assistant", "content": "Hello!"}]}]
    write_jsonl(tmp_path / "c.jsonl", [chat(1)])
    convert_file(tmp_path / "c.jsonl", tmp_path / "pc.jsonl", to="prompt_completion")
    assert read(tmp_path / "pc.jsonl") == [{"prompt": "system: Classify the review.\nuser: Review number 1: it was "
                                                      "fine.\nassistant:", "completion": " positive"}]
    write_jsonl(tmp_path / "legacy.jsonl", [{"prompt": "2+2=", "completion": " 4"}])
    convert_file(tmp_path / "legacy.jsonl", tmp_path / "l.jsonl", system="Do math.")
    assert read(tmp_path / "l.jsonl")[0]["messages"][0] == {"role": "system", "content": "Do math."}


def test_utf16_jsonl_is_reencoded(tmp_path):
    p = tmp_path / "w.jsonl"
    p.write_text("".join(json.dumps(chat(i), ensure_ascii=False) + "\n" for i in range(12)), encoding="utf-16")
    r = convert_file(p, tmp_path / "u8.jsonl")
    assert r.n_written == 12 and validate_file(tmp_path / "u8.jsonl").ok


def test_bad_jsonl_record_is_located(tmp_path):
    rows = [chat(i) for i in range(5)]
    rows[3]["messages"][1]["role"] = "human"
    write_jsonl(tmp_path / "b.jsonl", rows)
    with pytest.raises(DataError) as e:
        convert_file(tmp_path / "b.jsonl", tmp_path / "o.jsonl")
    assert e.value.line == 4 and e.value.field == "messages[1].role" and e.value.code == "unrecognized_role"
