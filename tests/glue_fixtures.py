"""Three-row files in each GLUE task's official layout (header names and column order as released)."""

FIXTURES = {
    "CoLA": {"train.tsv": "gj04\t1\t\tOur friends won't buy this analysis.\n"
                          "gj04\t0\t*\tThey drank the pub.\n"
                          "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n",
             "test.tsv": "index\tsentence\n0\tBill whistled past the house.\n1\tThe car honked down the road.\n"},
    "SST-2": {"train.tsv": "sentence\tlabel\na plodding , joyless sequel \t0\nnot one good joke \t0\n"
                           "the best film of the year \t1\n",
              "test.tsv": "index\tsentence\n0\ta muddled heap of ideas\n1\ta lovely little film\n"},
    "MRPC": {"train.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                          "1\t702876\t702977\tAmrozi accused his brother.\tReferring to him, Amrozi accused him.\n"
                          "0\t2108705\t2108831\tYucaipa owned Dominick's.\tYucaipa bought Dominick's in 1995.\n",
             "test.tsv": "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1\t2\tPCCW's chief.\tThe chief.\n"},
    "STS-B": {"train.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                           "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA kettle is boiling.\t"
                           "Water boils in a kettle.\t5.000\n"
                           "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA dog runs on a beach.\t"
                           "A dog is running by the sea.\t3.800\n",
              "test.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\n"
                          "0\tmain-captions\tMSRvid\t2012test\t0024\tnone\tnone\tA boy reads a book.\t"
                          "A child is reading.\n"},
    "QQP": {"train.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                         "133273\t213221\t213222\tHow is the life?\tWhat is life like?\t0\n"
                         "402555\t536040\t536041\tHow do I control my anger?\tHow to stop anger?\t1\n",
            "test.tsv": "id\tquestion1\tquestion2\n0\tWhy am I mentally weak?\tHow to be strong?\n"},
    "MNLI": {"dev_matched.tsv": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                                "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\t"
                                "label4\tlabel5\tgold_label\n"
                                "0\t63735\t63735n\tslate\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tThe new rights are nice."
                                "\tEveryone loves them.\tneutral\tentailment\tneutral\tneutral\tneutral\tneutral\n",
             "train.tsv": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                          "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
                          "0\t31193\t31193n\tgovernment\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tConceptually cream "
                          "skimming has two dimensions.\tProduct and geography are what make it work.\tneutral"
                          "\tneutral\n"
                          "1\t101457\t101457e\ttelephone\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tyou know during the "
                          "season\tYou lose the things.\tentailment\tentailment\n"},
    "QNLI": {"train.tsv": "index\tquestion\tsentence\tlabel\n0\tWhen did it start?\tIt started in 1901.\tentailment"
                          "\n1\tWho won?\tThe sky is blue.\tnot_entailment\n"},
    "RTE": {"train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tNo weapons were found.\tWeapons were found."
                         "\tnot_entailment\n1\tA place of sorrow.\tA sad place.\tentailment\n"},
    "WNLI": {"train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin through a carrot.\t"
                          "The carrot had a hole.\t1\n1\tJohn couldn't see.\tJohn was short.\t0\n"},
}

EXPECTED_FIRST = {
    "CoLA": ("Our friends won't buy this analysis.", None, 1),
    "SST-2": ("a plodding , joyless sequel ", None, 0),
    "MRPC": ("Amrozi accused his brother.", "Referring to him, Amrozi accused him.", 1),
    "STS-B": ("A kettle is boiling.", "Water boils in a kettle.", 5.0),
    "QQP": ("How is the life?", "What is life like?", 0),
    "MNLI": ("Conceptually cream skimming has two dimensions.", "Product and geography are what make it work.", 2),
    "QNLI": ("When did it start?", "It started in 1901.", 0),
    "RTE": ("No weapons were found.", "Weapons were found.", 1),
    "WNLI": ("I stuck a pin through a carrot.", "The carrot had a hole.", 1),
}


def write_task(root, task_name):
    folder = root / task_name
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in FIXTURES[task_name].items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder
